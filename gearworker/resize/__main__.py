"""``python -m gearworker.resize pack|unpack ...``: see :mod:`gearworker.resize.cli`."""

import sys

from .cli import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
