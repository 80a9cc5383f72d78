"""``gearworker web`` (filled in by the web app work)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gearworker web`` to the command line."""
