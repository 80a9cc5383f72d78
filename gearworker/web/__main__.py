"""``python -m gearworker.web``: the same as ``gearworker web``."""

from __future__ import annotations

import argparse
import sys

from ..procs import quiet_on_closed_pipe
from .cli import add_arguments, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gearworker.web", description="Serve the gearworker web app.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(quiet_on_closed_pipe(main))
