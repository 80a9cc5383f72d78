"""The worker process: its command line, its lifecycle and what it needs from the system.

:mod:`.launch` is the first code ``gearworker`` runs (it catches stop signals
before anything heavy is imported), :mod:`.cli` the command line,
:mod:`.server` the lifecycle (``startup()`` -> serve -> ``shutdown()``),
:mod:`.reload` the SIGHUP reload, :mod:`.check` what ``gearworker check``
prints (and the handler loading it shares with ``run``), :mod:`.pidfile`,
:mod:`.systemd` (sd_notify and the watchdog) and :mod:`.localserver` (the
gearmand started when no server is configured).

Nothing is imported here: ``gearworker.app.launch`` must stay light.
"""
