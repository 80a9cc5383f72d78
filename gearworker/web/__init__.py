"""The web app (``gearworker web``)."""
