"""Settings: one typed definition, loaded from ``settings.py``, then the
environment (``GEARWORKER_<NAME>``), then command-line flags, and validated
once at start-up so that a bad value fails before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import runpy
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .address import DEFAULT_PORT, parse_address
from .clientid import prefix_problem
from .errors import ConfigError
from .protocol.codec import DEFAULT_MAX_PACKET_SIZE

__all__ = ["ENV_PREFIX", "Settings", "activate", "active", "coerce", "fields", "load"]

ENV_PREFIX = "GEARWORKER_"


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _doc(text: str, **kw: Any) -> Any:
    return field(metadata={"doc": text}, **kw)


@dataclass(slots=True)
class Settings:
    """Every setting, with its default.  ``settings.py`` documents each one."""

    servers: list[str] = _doc("job servers as HOST:PORT; empty starts a local gearmand", default_factory=list)
    handlers_dir: str = _doc("folder of handler modules", default="handlers")
    aliases: dict[str, str] = _doc("extra function name -> handler name", default_factory=dict)
    concurrency: int = _doc("jobs in flight at once in this process, all handlers together", default=100)
    handler_concurrency: dict[str, int] = _doc("per-handler limits, overriding the decorator's", default_factory=dict)
    processes: int = _doc("process pool size for cpu=True handlers", default_factory=_cores)
    max_tasks_per_child: int | None = _doc("recycle a pool process after this many jobs", default=None)
    max_child_rss: int | None = _doc("recycle a pool process once its RSS passes this many MiB", default=None)
    grace_period: float = _doc("seconds in-flight jobs may finish after SIGTERM", default=30.0)
    timeout_margin: float = _doc("seconds added to a handler's timeout in CAN_DO_TIMEOUT", default=5.0)
    # 32, not 8: the tiny-job flood at defaults went 17.1k -> 21.1k jobs/s (30 vs 39 us of worker
    # CPU a job, 5.5 vs 10.5 us of gearmand's), 1.83x two PHP workers (bench, 3 alternated rounds).
    # A deep pipeline no longer costs lone jobs (a wake-up probes with one grab) nor lets the first
    # worker to wake take a whole burst: the window widens 1, 2, 4... only while grabs bring jobs.
    grab_pipeline: int = _doc("most GRAB_JOB requests in flight per connection, under load", default=32)
    max_packet_size: int = _doc("largest packet accepted from a server, bytes", default=DEFAULT_MAX_PACKET_SIZE)
    reconnect_min: float = _doc("first reconnect delay, seconds", default=0.1)
    reconnect_max: float = _doc("longest reconnect delay, seconds", default=10.0)
    connect_timeout: float = _doc("seconds to wait for a TCP connection", default=5.0)
    heartbeat_interval: float = _doc(
        "seconds a connection may stay silent before we send ECHO_REQ; 0: off", default=10.0
    )
    heartbeat_timeout: float = _doc(
        "seconds to wait for any byte after a heartbeat before dropping the connection", default=10.0
    )
    keepalive_idle: int = _doc("TCP keepalive: idle seconds before the first probe; 0: off", default=10)
    keepalive_interval: int = _doc("TCP keepalive: seconds between probes", default=5)
    keepalive_count: int = _doc("TCP keepalive: unanswered probes before the kernel drops the connection", default=3)
    idle_poll: float = _doc(
        "a sleeping worker grabs anyway every this many seconds (scheduled jobs); 0: off", default=1.0
    )
    on_connection_lost: str = _doc(
        "jobs whose connection dropped: 'cancel' them or let them 'finish'", default="cancel"
    )
    tls: bool = _doc("connect to job servers with TLS", default=False)
    tls_ca_file: str | None = _doc("CA certificates (PEM) to verify job servers; None: the system's", default=None)
    tls_cert_file: str | None = _doc("client certificate (PEM) for job servers that ask for one", default=None)
    tls_key_file: str | None = _doc("private key of tls_cert_file; None: in the same file", default=None)
    tls_server_hostname: str | None = _doc("name to check the server certificate against; None: the host", default=None)
    client_id: str = _doc(
        "host part of the client id gearadmin --workers shows (<this>-<pid>@gearworker/<version>); empty: host name",
        default="",
    )
    failure_style: str = _doc("'fail' (WORK_WARNING + WORK_FAIL, every client) or 'exception'", default="fail")
    failed_jobs: str | None = _doc("record finally-failed jobs here: *.db/*.sqlite file or a folder", default=None)
    failed_workload_limit: int = _doc("workload bytes kept in a failed-job record", default=1024 * 1024)
    middleware: list[str] = _doc("'module:attribute' middlewares run around every job", default_factory=list)
    schedule_max_age: float = _doc(
        "seconds after its time past which a schedule's tick is neither submitted nor run", default=60.0
    )
    pid_file: str | None = _doc("pid file; refuses a second instance", default=None)
    log_file: str | None = _doc("also write JSON log lines to this file", default=None)
    log_format: str = _doc("'auto' (console on a terminal, else JSON), 'json' or 'console'", default="auto")
    log_level: str = _doc("debug, info, warning or error", default="info")
    metrics: str | None = _doc("HOST:PORT for Prometheus /metrics and /healthz; None: off", default=None)
    local_gearmand_port: int = _doc("port of the local gearmand started when no server is set", default=DEFAULT_PORT)
    storage_roots: list[str] = _doc("folders handlers may read and write in file mode", default_factory=list)
    max_image_pixels: int = _doc("largest image (width x height) the resize handler decodes", default=100_000_000)
    max_upload_bytes: int = _doc("largest upload accepted by the web app and resize handler", default=50 * 1024 * 1024)
    web_storage_root: str = _doc(
        "folder where the web app keeps photos (originals, copies, metadata)", default="var/photos"
    )
    web_max_photos: int = _doc("photos the web app keeps; the oldest finished ones go first", default=500)
    web_max_stored_bytes: int = _doc("bytes of photos (originals + copies) the web app keeps", default=2 * 1024**3)
    web_photo_mode: str = _doc(
        "'bytes' (photos travel in the job) or 'file' (worker reads and writes the shared storage root)",
        default="bytes",
    )
    web_password_hash: str | None = _doc(
        "login for the web app: a hash from `gearworker web --hash-password`; None: no login", default=None
    )
    web_allow_insecure_remote: bool = _doc(
        "let the web app listen on a non-loopback address without a login", default=False
    )
    web_allowed_hosts: list[str] = _doc(
        "Host names the web app answers besides loopback and its listen address ('name': on 80, 443 or its port; "
        "'name:port': on that port); '*': any",
        default_factory=list,
    )
    web_rate_limit: int = _doc("jobs and photos one client may submit per minute", default=600)
    web_job_timeout: float = _doc("seconds a foreground job from the web app may wait and run", default=300.0)
    web_metrics: str | None = _doc(
        "HOST:PORT where the web app also serves /metrics (gearmand's state) without a login; None: off",
        default=None,
    )
    web_worker_metrics: list[str] = _doc(
        "the workers' metrics addresses (HOST:PORT) the web console scrapes for rates and run times",
        default_factory=list,
    )

    source: str = field(default="defaults", metadata={"internal": True})
    #: Where each value not left at its default came from (a file, an environment variable, "command line").
    sources: dict[str, str] = field(default_factory=dict, metadata={"internal": True}, repr=False, compare=False)

    def validate(self) -> Settings:
        """Raise :class:`ConfigError` for the first bad value; return self."""
        for name in (
            "concurrency",
            "processes",
            "grab_pipeline",
            "max_packet_size",
            "max_image_pixels",
            "max_upload_bytes",
            "web_max_photos",
            "web_max_stored_bytes",
            "web_rate_limit",
        ):
            if getattr(self, name) < 1:
                self._fail(name, f"must be >= 1, got {getattr(self, name)!r}")
        for name in ("max_tasks_per_child", "max_child_rss"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                self._fail(name, f"must be >= 1 or None, got {getattr(self, name)!r}")
        if self.failed_workload_limit < 0:
            self._fail("failed_workload_limit", f"must be >= 0, got {self.failed_workload_limit!r}")
        for spec in self.middleware:
            module, sep, attr = spec.partition(":")
            if not (sep and module and attr):
                self._fail("middleware", f"{spec!r} is not 'module:attribute'")
        for name in (
            "grace_period",
            "timeout_margin",
            "reconnect_min",
            "reconnect_max",
            "connect_timeout",
            "heartbeat_interval",
            "heartbeat_timeout",
            "idle_poll",
            "web_job_timeout",
            "schedule_max_age",
        ):
            value = getattr(self, name)
            # NaN passes every comparison, so test for it explicitly.
            if not math.isfinite(value) or value < 0:
                self._fail(name, f"must be a finite number >= 0, got {value!r}")
        if self.reconnect_max < self.reconnect_min:
            self._fail(
                "reconnect_max", f"must be >= reconnect_min ({self.reconnect_min!r}), got {self.reconnect_max!r}"
            )
        for server in self.servers:
            try:
                parse_address(server)
            except ValueError as e:
                self._fail("servers", str(e))
        for name, addresses in (
            ("metrics", [self.metrics] if self.metrics else []),
            ("web_metrics", [self.web_metrics] if self.web_metrics else []),
            ("web_worker_metrics", self.web_worker_metrics),
        ):
            for address in addresses:
                try:
                    # No default port here: 4730 would collide with a local gearmand.
                    parse_address(address, default_host="127.0.0.1", default_port=None)
                except ValueError as e:
                    self._fail(name, str(e))
        for name in ("keepalive_idle", "keepalive_interval", "keepalive_count"):
            if getattr(self, name) < 0:
                self._fail(name, f"must be >= 0, got {getattr(self, name)!r}")
        if self.heartbeat_interval and not self.heartbeat_timeout:
            self._fail("heartbeat_timeout", "must be > 0 while heartbeat_interval is set")
        if (self.tls_cert_file or self.tls_key_file or self.tls_ca_file) and not self.tls:
            self._fail("tls", "TLS files are set but tls is False: set tls = True (never a silent plaintext)")
        if self.tls_key_file and not self.tls_cert_file:
            self._fail("tls_key_file", "is set without tls_cert_file")
        for name in ("tls_ca_file", "tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path and not os.path.isfile(path):
                self._fail(name, f"no such file: {path}")
        for name, value, allowed in (
            ("on_connection_lost", self.on_connection_lost, {"cancel", "finish"}),
            ("failure_style", self.failure_style, {"fail", "exception"}),
            ("log_format", self.log_format, {"auto", "json", "console"}),
            ("log_level", self.log_level, {"debug", "info", "warning", "error"}),
            ("web_photo_mode", self.web_photo_mode, {"bytes", "file"}),
        ):
            if value not in allowed:
                self._fail(name, f"must be one of {sorted(allowed)}, got {value!r}")
        for name, limit in self.handler_concurrency.items():
            if not isinstance(limit, int) or limit < 1:
                self._fail("handler_concurrency", f"limit for {name!r} must be an int >= 1, got {limit!r}")
        if not self.web_storage_root:
            self._fail("web_storage_root", "must name a folder")
        if problem := prefix_problem(self.client_id):
            self._fail("client_id", problem)
        if not 1 <= self.local_gearmand_port <= 65535:
            self._fail("local_gearmand_port", "must be a TCP port (1-65535)")
        return self

    def _fail(self, setting: str, message: str) -> typing.NoReturn:
        raise ConfigError(message, file=self.source, setting=setting)

    def origin(self, setting: str) -> str:
        """Where ``setting``'s value came from, for error messages about it."""
        return self.sources.get(setting, self.source)

    def addresses(self) -> list[tuple[str, int]]:
        """The servers as (host, port) pairs."""
        return [parse_address(s) for s in self.servers]


def fields() -> list[dataclasses.Field[Any]]:
    """The user-visible settings, in definition order."""
    return [f for f in dataclasses.fields(Settings) if not f.metadata.get("internal")]


def _hints() -> dict[str, Any]:
    return typing.get_type_hints(Settings)


def coerce(name: str, value: Any, *, source: str) -> Any:
    """Convert ``value`` (from a file, the environment or a flag) to the type of setting ``name``."""
    hint = _hints()[name]
    try:
        return _coerce(hint, value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"expected {_describe(hint)}, got {value!r} ({e})", file=source, setting=name) from e


def _coerce(hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (types.UnionType, typing.Union):
        if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
            return None
        return _coerce(next(a for a in args if a is not type(None)), value)
    if origin is list:
        if isinstance(value, str):
            value = json.loads(value) if value.strip().startswith("[") else [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise TypeError("not a list")
        return [_coerce(args[0], v) for v in value]
    if origin is dict:
        if isinstance(value, str):
            value = _parse_mapping(value)
        if not isinstance(value, dict):
            raise TypeError("not a mapping")
        return {_coerce(args[0], k): _coerce(args[1], v) for k, v in value.items()}
    if hint is bool:
        if isinstance(value, str):
            if value.lower() in ("1", "true", "yes", "on"):
                return True
            if value.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("not a boolean")
        return bool(value)
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise TypeError("not an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise TypeError("not a number")
        return float(value)
    if hint is str:
        if isinstance(value, os.PathLike):  # HANDLERS_DIR = Path(__file__).parent / "handlers"
            value = os.fspath(value)
        if not isinstance(value, str):
            raise TypeError("not a string")
        return value.strip()
    return value


def _parse_mapping(text: str) -> Any:
    """``{"a": 1}`` (JSON) or ``a=1,b=2`` from the environment or a flag."""
    text = text.strip()
    if text.startswith("{"):
        return json.loads(text)
    pairs = [p for p in text.split(",") if p.strip()]
    if any("=" not in p for p in pairs):
        raise ValueError("expected NAME=VALUE pairs separated by commas, or a JSON object")
    return dict(p.strip().split("=", 1) for p in pairs)


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) is not None:  # list[str] rather than just "list"
        return str(hint).replace("typing.", "")
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def load(
    path: str | os.PathLike[str] | None = None,
    *,
    env: typing.Mapping[str, str] | None = None,
    overrides: typing.Mapping[str, Any] | None = None,
) -> Settings:
    """Build the settings: defaults < ``path`` < environment < ``overrides``.

    ``path`` defaults to ``$GEARWORKER_SETTINGS`` or ``./settings.py`` when it
    exists.  Unknown names in the file or environment are errors (a typo must
    not silently fall back to a default).
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    known = {f.name for f in fields()}
    file = _settings_path(path, env)
    if file is not None:
        for name, value in _read_file(file).items():
            if name not in known:
                raise ConfigError(f"unknown setting (known: {', '.join(sorted(known))})", file=str(file), setting=name)
            values[name], sources[name] = coerce(name, value, source=str(file)), str(file)
    for key, text in env.items():
        if not key.startswith(ENV_PREFIX) or key == ENV_PREFIX + "SETTINGS":
            continue
        name = key[len(ENV_PREFIX) :].lower()
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}?)" if close else ""
            raise ConfigError(f"unknown setting in environment variable {key}{hint}", file="environment", setting=name)
        source = f"environment variable {key}"
        values[name], sources[name] = coerce(name, text, source=source), source
    for name, value in (overrides or {}).items():
        if name not in known:
            raise ConfigError("unknown setting on the command line", file="command line", setting=name)
        if value is not None:
            values[name], sources[name] = coerce(name, value, source="command line"), "command line"
    settings = Settings(**values)
    settings.source = str(file) if file is not None else "defaults"
    settings.sources = sources
    _validate_each(settings, sources)
    return settings


def _validate_each(settings: Settings, sources: dict[str, str]) -> None:
    try:
        settings.validate()
    except ConfigError as e:
        # Name where the bad value came from, not just the settings file.
        origin = sources.get(e.setting or "", settings.source)
        raise ConfigError(e.detail, file=origin, setting=e.setting) from None


def _settings_path(path: str | os.PathLike[str] | None, env: typing.Mapping[str, str]) -> Path | None:
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError("settings file not found", file=str(p))
        return p
    if env.get(ENV_PREFIX + "SETTINGS"):
        return _settings_path(env[ENV_PREFIX + "SETTINGS"], {})
    default = Path("settings.py")
    return default if default.is_file() else None


def _read_file(path: Path) -> dict[str, Any]:
    try:
        namespace = runpy.run_path(str(path))
    except Exception as e:
        raise ConfigError(f"cannot be executed: {type(e).__name__}: {e}", file=str(path)) from e
    return {k.lower(): v for k, v in namespace.items() if k.isupper() and not k.startswith("_")}


_active: Settings | None = None


def activate(settings: Settings | None) -> None:
    """Make ``settings`` what :func:`active` returns in this process (the worker and each pool process);
    None when the worker has stopped."""
    global _active
    _active = settings


def active() -> Settings:
    """The running worker's settings, for handlers; outside a worker, :func:`load` from the usual places."""
    return _active if _active is not None else load()
