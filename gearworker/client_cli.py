"""``gearworker submit`` and ``gearworker status`` (filled in by the client work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the client sub-commands to the ``gearworker`` command line."""
