"""A pid file that refuses a second instance and replaces a stale one."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..errors import ConfigError
from ..procs import is_running

__all__ = ["PidFile", "read_pid"]


def _alive(pid: int) -> bool:
    if not is_running(pid):
        return False
    # A live process with a recycled pid is not us if it is not a gearworker.
    with contextlib.suppress(OSError):
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        return b"gearworker" in cmdline
    return True


def read_pid(path: str | os.PathLike[str]) -> int | None:
    """The pid recorded in ``path``, or None when missing or unreadable."""
    try:
        return int(Path(path).read_text().strip())
    except (OSError, ValueError):
        return None


class PidFile:
    """Create with :meth:`acquire`, delete with :meth:`release` (only if still ours)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.pid = os.getpid()

    def acquire(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                other = read_pid(self.path)
                if other is not None and other != self.pid and _alive(other):
                    raise ConfigError(
                        f"gearworker is already running as pid {other}", file=str(self.path), setting="pid_file"
                    ) from None
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            except OSError as e:
                raise ConfigError(f"cannot create pid file: {e}", file=str(self.path), setting="pid_file") from e
            with os.fdopen(fd, "w") as f:
                f.write(f"{self.pid}\n")
            return
        raise ConfigError("pid file keeps reappearing", file=str(self.path), setting="pid_file")

    def release(self) -> None:
        if read_pid(self.path) == self.pid:
            self.path.unlink(missing_ok=True)
