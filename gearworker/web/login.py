"""The web app's optional login: password hashes and signed session cookies.

Only the standard library (``hashlib.scrypt``, ``hmac``), so that
:mod:`gearworker.config` can check a ``web_password_hash`` without the web
extras installed.

A hash reads ``scrypt$N$r$p$<salt hex>$<key hex>``; ``gearworker web
--hash-password`` makes one.  A session cookie is ``<expiry>.<hmac>``, signed
with a key derived from the hash itself: it needs no server-side state, so a
login survives a restart of the web app, and changing the password logs
everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

#: scrypt cost: about 50 ms and 16 MiB per check here; login is rare.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
#: How long a login lasts.
SESSION_SECONDS = 12 * 3600
COOKIE = "gw_login"


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


def session_cookie(stored: str, *, now: float | None = None) -> str:
    """A cookie value proving a login, valid :data:`SESSION_SECONDS`."""
    expiry = str(int((time.time() if now is None else now) + SESSION_SECONDS))
    mac = hmac.new(_signing_key(stored), expiry.encode(), hashlib.sha256).hexdigest()
    return f"{expiry}.{mac}"


def valid_session(cookie: str | None, stored: str, *, now: float | None = None) -> bool:
    """True for an unexpired cookie signed for this password hash."""
    if not cookie or "." not in cookie:
        return False
    expiry, mac = cookie.split(".", 1)
    if not expiry.isdigit():
        return False
    good = hmac.new(_signing_key(stored), expiry.encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, good) and int(expiry) > (time.time() if now is None else now)
