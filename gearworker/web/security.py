"""What keeps other sites and other people out of the web app.

:class:`Guard` is one ASGI middleware that runs before any route:

- **Host** must be a name this app answers to (loopback, the listen address,
  ``web_allowed_hosts``), with a port it answers on (:class:`Hosts`): a
  DNS-rebinding page on ``evil.example`` that resolves to 127.0.0.1 still
  sends ``Host: evil.example`` and is refused.
- **State-changing requests** (anything but GET/HEAD) need an ``Origin``
  (when the browser sends one) equal to this app's own, a ``Sec-Fetch-Site``
  of ``same-origin``, and an ``X-CSRF-Token`` header equal to the
  ``gw_csrf`` cookie (SameSite=Strict, set with the page).  A form on
  another site can set none of these; a cross-origin ``fetch`` with the
  header needs a CORS preflight this app never grants.
- **Every request body is capped while it is read**: a declared
  ``Content-Length`` over the route's cap is answered 413 before one byte
  is read; a chunked body is cut off at the cap.  Unread bytes stay in the
  kernel (uvicorn stops reading when the app does not ask for more).
- **Login** (when ``web_password_hash`` is set): everything but the login
  page and its assets needs the signed ``gw_login`` cookie.

:class:`RateLimit` is a per-client token bucket the submit routes and the login use (429).
"""

from __future__ import annotations

import ipaddress
import math
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from http.cookies import SimpleCookie

import structlog
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import login

log = structlog.get_logger("gearworker.web")

CSRF_COOKIE = "gw_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD"})
#: Body cap of any route not named in the limits: enough for a login or a small JSON request.
DEFAULT_BODY_LIMIT = 16 * 1024
#: Reachable without a login: the login page and what it needs.
PUBLIC_PATHS = frozenset({"/login", "/api/login", "/static/login.js", "/static/style.css", "/static/favicon.svg"})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


class BodyTooLarge(Exception):
    """A request body went past its route's cap while it was being read."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body over {limit} bytes")
        self.limit = limit


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP addresses (where only this machine can connect)."""
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class Hosts:
    """The ``Host`` headers the app answers: names, each with the ports it may come with (None: any).

    A Host without a port means the default port of the request's scheme (80 for http, 443 for
    https), as a browser omits exactly those.  ``any_host`` (a ``"*"`` in ``web_allowed_hosts``)
    lets everything through.
    """

    names: dict[str, frozenset[int] | None]
    any_host: bool = False

    def allows(self, host_header: str, scheme: str) -> bool:
        if self.any_host:
            return True
        name, port = split_host(host_header)
        if name not in self.names:
            return False
        ports = self.names[name]
        if ports is None:
            return True
        return (port if port is not None else 443 if scheme in ("https", "wss") else 80) in ports


def allowed_hosts(listen_host: str, extra: Iterable[str], listen_port: int | None = None) -> Hosts:
    """The Host headers the app answers (see docs/web.md, "Safe from other sites").

    - ``localhost``, loopback addresses and the listen address: on the listen port only;
    - an entry ``name`` of ``web_allowed_hosts``: on 80 or 443 (behind a proxy) or the listen port;
    - an entry ``name:port``: on that port only (a proxy elsewhere, a container's published port);
    - ``*``: anything.

    Without a ``listen_port`` (an app built in-process, not served by ``gearworker web``) the port
    is not checked.
    """
    listen: set[int] | None = None if listen_port is None else {listen_port}
    names: dict[str, set[int] | None] = {name: _copy(listen) for name in LOOPBACK_NAMES}
    if listen_host not in ("0.0.0.0", "::", ""):
        names[listen_host.lower().strip("[]")] = _copy(listen)
    any_host = False
    for entry in (e.strip().lower() for e in extra):
        if entry == "*":
            any_host = True
        elif entry:
            name, port = split_host(entry)
            wanted = {port} if port is not None else (None if listen is None else {80, 443, *listen})
            have = names.get(name, set())
            names[name] = None if have is None or wanted is None else have | wanted
    return Hosts({k: None if v is None else frozenset(v) for k, v in names.items()}, any_host)


def _copy(ports: set[int] | None) -> set[int] | None:
    return None if ports is None else set(ports)


def split_host(host_header: str) -> tuple[str, int | None]:
    """``example.com:8000`` -> ``("example.com", 8000)``; ``[::1]`` -> ``("::1", None)``; a bad port: -2."""
    host = host_header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        if end < 0:
            return host, None
        name, rest = host[1:end], host[end + 1 :]
    elif host.count(":") == 1:
        name, _, port = host.partition(":")
        rest = f":{port}"
    else:
        name, rest = host, ""  # a bare IPv6 address has several colons and no port
    if not rest:
        return name, None
    port = rest[1:]
    return name, int(port) if rest.startswith(":") and port.isdigit() and len(port) <= 5 else -2


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}


def _cookies(headers: dict[str, str]) -> dict[str, str]:
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(headers.get("cookie", ""))
    except Exception:  # a malformed Cookie header means no cookies, not a 500
        return {}
    return {k: m.value for k, m in jar.items()}


def client_host(request: Request) -> str:
    """The client's address, for logs and per-client limits ("?" when unknown)."""
    return request.client.host if request.client else "?"


def refuse(status: int, message: str, **headers: str) -> Response:
    """The app's error shape: ``{"error": "<plain words>"}``."""
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


@dataclass(frozen=True)
class BodyLimit:
    """A route's body cap, the sentence a refusal says, and the log event it makes."""

    limit: int
    message: str
    event: str = "web.request.too_large"


@dataclass(frozen=True)
class GuardConfig:
    """What :class:`Guard` enforces."""

    hosts: Hosts
    body_limits: dict[str, BodyLimit]
    password_hash: str | None = None
    #: The live logins (logout ends one); without it a signed, unexpired cookie is enough.
    logins: login.Logins | None = None


class Guard:
    """ASGI middleware: Host, Origin and CSRF checks, login, and body caps (see the module docstring)."""

    def __init__(self, app: ASGIApp, config: GuardConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        path: str = scope.get("path", "")
        method: str = scope.get("method", "GET")
        problem = self._check(scope, headers, path, method)
        if problem is not None:
            log.warning(
                "web.request.refused",
                path=path,
                method=method,
                status=problem.status_code,
                client=(scope.get("client") or ("?",))[0],
                origin=headers.get("origin"),
            )
            await problem(scope, receive, send)
            return
        cap = self.config.body_limits.get(path) or _default_limit()
        limit = cap.limit
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            log.warning(
                cap.event,
                path=path,
                reason="too_large",
                declared=int(declared),
                limit=limit,
                client=(scope.get("client") or ("?",))[0],
            )
            await _too_large(cap)(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if method in SAFE_METHODS and CSRF_COOKIE not in _cookies(headers):
                    message["headers"] = [*message.get("headers", []), _csrf_cookie(scope)]
            await send(message)

        try:
            await self.app(scope, _capped(receive, limit), tracking_send)
        except BodyTooLarge:
            log.warning(
                cap.event, path=path, reason="too_large", limit=limit, client=(scope.get("client") or ("?",))[0]
            )
            if not started:
                await _too_large(cap)(scope, receive, send)

    def _check(self, scope: Scope, headers: dict[str, str], path: str, method: str) -> Response | None:
        host = headers.get("host", "")
        if not self.config.hosts.allows(host, scope.get("scheme", "http")):
            return refuse(421, f"This web app does not answer to the name {host!r} (see web_allowed_hosts).")
        if method not in SAFE_METHODS:
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}".lower()
            if origin is not None and origin.lower() != own:
                return refuse(403, "Refused: this request came from another web site.")
            if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
                return refuse(403, "Refused: this request came from another web site.")
            cookie = _cookies(headers).get(CSRF_COOKIE, "")
            if not cookie or not secrets.compare_digest(cookie, headers.get(CSRF_HEADER, "")):
                return refuse(403, "Refused: the page's security token is missing or old; reload the page.")
        stored = self.config.password_hash
        if stored and path not in PUBLIC_PATHS and not self._logged_in(_cookies(headers).get(login.COOKIE), stored):
            if path.startswith("/api/") or method not in SAFE_METHODS:
                return refuse(401, "Log in first: this web app needs a password.")
            return RedirectResponse("/login", status_code=303)
        return None

    def _logged_in(self, cookie: str | None, stored: str) -> bool:
        logins = self.config.logins
        return logins.valid(cookie, stored) if logins is not None else login.valid_session(cookie, stored)


def _csrf_cookie(scope: Scope) -> tuple[bytes, bytes]:
    secure = "; Secure" if scope.get("scheme") == "https" else ""
    value = f"{CSRF_COOKIE}={secrets.token_urlsafe(24)}; Path=/; SameSite=Strict{secure}"
    return b"set-cookie", value.encode("latin-1")


def login_cookie(value: str, *, secure: bool) -> str:
    """``Set-Cookie`` value for a login: HttpOnly (no script reads it), SameSite=Strict."""
    flags = "; Secure" if secure else ""
    return f"{login.COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={login.SESSION_SECONDS}{flags}"


def _default_limit() -> BodyLimit:
    return BodyLimit(DEFAULT_BODY_LIMIT, f"That request is too big: at most {DEFAULT_BODY_LIMIT // 1024} KB here.")


def _too_large(cap: BodyLimit) -> Response:
    # Close: the rest of the body is never read, so the connection cannot carry another request.
    return refuse(413, cap.message, connection="close")


def _capped(receive: Receive, limit: int) -> Receive:
    """``receive`` that raises :class:`BodyTooLarge` as soon as the body passes ``limit``."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise BodyTooLarge(limit)
        return message

    return wrapped


class RateLimit:
    """A token bucket per client address: ``per_minute`` submissions, refilled continuously."""

    MAX_CLIENTS = 10_000

    def __init__(self, per_minute: int) -> None:
        self.capacity = float(per_minute)
        self.rate = per_minute / 60.0
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, client: str, cost: int = 1, *, now: float | None = None) -> float:
        """Spend ``cost`` tokens; 0.0 when allowed, else the seconds to wait before asking again."""
        now = time.monotonic() if now is None else now
        tokens, then = self._buckets.get(client, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - then) * self.rate)
        if cost > tokens:
            return max(1.0, math.ceil((cost - tokens) / self.rate))
        if len(self._buckets) >= self.MAX_CLIENTS and client not in self._buckets:
            self._forget_full(now)
        self._buckets[client] = (tokens - cost, now)
        return 0.0

    def refund(self, client: str, cost: int = 1) -> None:
        """Give back ``cost`` tokens taken by :meth:`take` (an attempt that turned out not to count)."""
        if client in self._buckets:
            tokens, then = self._buckets[client]
            self._buckets[client] = (min(self.capacity, tokens + cost), then)

    def _forget_full(self, now: float) -> None:
        # Buckets that refilled completely say nothing: forget them so the map stays bounded.
        for key, (tokens, then) in list(self._buckets.items()):
            if tokens + (now - then) * self.rate >= self.capacity:
                del self._buckets[key]
