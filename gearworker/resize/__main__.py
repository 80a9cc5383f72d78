"""``python -m gearworker.resize pack|unpack ...``: see :mod:`gearworker.resize.cli`."""

import sys

from ..procs import quiet_on_closed_pipe
from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(quiet_on_closed_pipe(main))
