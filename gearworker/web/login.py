"""The web app's optional login: password hashes, signed session cookies, and the record of live logins.

Only the standard library (``hashlib.scrypt``, ``hmac``), so that
:mod:`gearworker.config` can check a ``web_password_hash`` without the web
extras installed.

A hash reads ``scrypt$N$r$p$<salt hex>$<key hex>``; ``gearworker web
--hash-password`` makes one.  A session cookie is ``<expiry>.<id>.<hmac>``:
a random id per login, signed with a key derived from the hash itself, so
changing the password logs everyone out.  A signature alone cannot be taken
back, so :class:`Logins` also records each live login (the SHA-256 of its
id and its expiry) in ``logins.json`` under the web storage root: logout
deletes the entry, and the cookie is refused from then on, also after a
restart of the web app, which reads the record again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tempfile
import time
from pathlib import Path

#: scrypt cost: about 50 ms and 16 MiB per check here; login is rare.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
COOKIE = "gw_login"
#: Logins recorded at most; past it the oldest ends (each costs about 90 bytes on disk).
MAX_LOGINS = 1000
#: The record of live logins, in the web storage root.
RECORD = "logins.json"


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A ``web_password_hash`` value for ``password`` (random salt)."""
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=32, maxmem=256 * 1024 * 1024)
    return f"scrypt${n}${r}${p}${salt.hex()}${key.hex()}"


def check_hash_format(value: str) -> str | None:
    """Why ``value`` is not a usable hash, or None when it is."""
    parts = value.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return "must look like scrypt$N$r$p$SALT$KEY (make one with: gearworker web --hash-password)"
    try:
        n, r, p = (int(x) for x in parts[1:4])
        bytes.fromhex(parts[4])
        key = bytes.fromhex(parts[5])
    except ValueError:
        return "has a part that is not a number or not hex (make one with: gearworker web --hash-password)"
    if n < 2 or n & (n - 1) or r < 1 or p < 1 or len(key) < 16:
        return "has impossible scrypt parameters (make one with: gearworker web --hash-password)"
    return None


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches the ``scrypt$...`` hash (constant-time compare)."""
    if check_hash_format(stored) is not None:
        return False
    _, n, r, p, salt, key = stored.split("$")
    expected = bytes.fromhex(key)
    got = hashlib.scrypt(
        password.encode()[:1024],
        salt=bytes.fromhex(salt),
        n=int(n),
        r=int(r),
        p=int(p),
        dklen=len(expected),
        maxmem=256 * 1024 * 1024,
    )
    return hmac.compare_digest(got, expected)


def _signing_key(stored: str) -> bytes:
    return hashlib.sha256(b"gearworker web session\0" + stored.encode()).digest()


def _mac(stored: str, expiry: str, session_id: str) -> str:
    return hmac.new(_signing_key(stored), f"{expiry}.{session_id}".encode(), hashlib.sha256).hexdigest()


def session_cookie(stored: str, *, now: float | None = None, session_id: str | None = None) -> str:
    """A cookie value proving a login, valid :data:`SESSION_SECONDS` (a random id unless one is given)."""
    expiry = str(int((time.time() if now is None else now) + SESSION_SECONDS))
    session_id = session_id or secrets.token_hex(16)
    return f"{expiry}.{session_id}.{_mac(stored, expiry, session_id)}"


def _parts(cookie: str | None) -> tuple[str, str, str] | None:
    parts = (cookie or "").split(".")
    if len(parts) != 3 or not parts[0].isdigit() or not parts[1]:
        return None
    return parts[0], parts[1], parts[2]


def valid_session(cookie: str | None, stored: str, *, now: float | None = None) -> bool:
    """True for an unexpired cookie signed for this password hash; :class:`Logins` knows if it was logged out."""
    parts = _parts(cookie)
    if parts is None:
        return False
    expiry, session_id, mac = parts
    good = _mac(stored, expiry, session_id)
    return hmac.compare_digest(mac, good) and int(expiry) > (time.time() if now is None else now)


def _digest(session_id: str) -> str:
    # Only a hash of the id is kept: whoever reads the record (a worker sharing the folder) learns no cookie.
    return hashlib.sha256(session_id.encode()).hexdigest()


class Logins:
    """The live logins: started by a right password, ended by logout or expiry, kept across restarts.

    In memory, ``{sha256(id): expiry}``; on disk the same in ``<root>/logins.json`` (mode 0600),
    read at construction and written whole after each login and logout (rate-limited, so rare).
    At most ``max_logins`` entries: expired ones go first, then the oldest.
    """

    def __init__(self, root: str | os.PathLike[str], *, max_logins: int = MAX_LOGINS) -> None:
        self.path = Path(root).resolve() / RECORD
        self.max_logins = max_logins
        self._live: dict[str, int] = {}
        try:
            entries = json.loads(self.path.read_text())["logins"]
            self._live = {str(k): int(v) for k, v in entries.items()}
        except FileNotFoundError:
            pass
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            self._live = {}  # an unreadable record logs everyone out: the safe way to fail

    def __len__(self) -> int:
        return len(self._live)

    def start(self, stored: str, *, now: float | None = None) -> str:
        """Record a new login and return its cookie value; call :meth:`save` next."""
        now = time.time() if now is None else now
        cookie = session_cookie(stored, now=now)
        expiry, session_id, _ = cookie.split(".")
        self._live = {k: v for k, v in self._live.items() if v > now}
        while len(self._live) >= self.max_logins:
            del self._live[min(self._live, key=self._live.__getitem__)]
        self._live[_digest(session_id)] = int(expiry)
        return cookie

    def end(self, cookie: str | None) -> bool:
        """Forget the login of ``cookie`` (logout); True when it was live.  Call :meth:`save` next."""
        parts = _parts(cookie)
        return parts is not None and self._live.pop(_digest(parts[1]), None) is not None

    def valid(self, cookie: str | None, stored: str, *, now: float | None = None) -> bool:
        """A signed, unexpired cookie of a login that has not been logged out."""
        if not valid_session(cookie, stored, now=now):
            return False
        parts = _parts(cookie)
        return parts is not None and _digest(parts[1]) in self._live

    def snapshot(self) -> bytes:
        """The record as it is now, for :meth:`save` (take it on the event loop, write it in a thread)."""
        return json.dumps({"logins": self._live}, separators=(",", ":")).encode()

    def save(self, data: bytes | None = None) -> None:
        """Write the record (a temporary file renamed into place; blocking I/O: call it in a thread)."""
        data = self.snapshot() if data is None else data
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{RECORD}-", suffix=".tmp")  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
