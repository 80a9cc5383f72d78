"""``python -m gearworker.resize``: the shell side of the ``gearman -f resize`` examples.

``pack`` writes a ``GWIMG1`` workload to stdout; ``unpack`` writes each copy of
a ``GWRES1`` result into a folder.  Neither needs libvips.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .wire import pack_request, unpack_result

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """``python -m gearworker.resize pack IMAGE [SIZES [FORMAT [QUALITY]]]`` or ``unpack RESULT DIR``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 2 and args[0] == "pack":
        sizes = [int(s) for s in args[2].split(",")] if len(args) > 2 else None
        fmt = args[3] if len(args) > 3 else "jpeg"
        quality = int(args[4]) if len(args) > 4 else 85
        sys.stdout.buffer.write(pack_request(Path(args[1]).read_bytes(), sizes=sizes, format=fmt, quality=quality))
        return 0
    if len(args) == 3 and args[0] == "unpack":
        out = Path(args[2])
        out.mkdir(parents=True, exist_ok=True)
        for c in unpack_result(Path(args[1]).read_bytes()):
            path = out / f"{c.size}.{c.extension}"
            path.write_bytes(c.data)
            print(f"{path}\t{c.width}x{c.height}\t{c.format}\t{len(c.data)} bytes")
        return 0
    print(main.__doc__, file=sys.stderr)
    return 2
