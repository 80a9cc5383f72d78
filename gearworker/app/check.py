"""``gearworker check``: what the worker would run with these settings.

The text is for an operator reading a terminal or a deploy log, so it names
where each thing comes from (the settings file, the handler file) and shows
effective values (a per-handler limit from settings beats the decorator's).
"""

from __future__ import annotations

from ..address import parse_address
from ..config import Settings
from ..errors import ConfigError
from ..worker.registry import Handler, Registry

__all__ = ["check_handlers", "describe", "load_handlers"]


def load_handlers(settings: Settings) -> Registry:
    """Import the handlers and check the settings that name them; errors say where the value came from."""
    from ..worker.registry import discover

    registry = discover(settings.handlers_dir, settings.aliases, settings_file=settings.origin("handlers_dir"))
    if not registry.functions:
        raise ConfigError(
            f"no handler found in {settings.handlers_dir!r}",
            file=settings.origin("handlers_dir"),
            setting="handlers_dir",
        )
    check_handlers(settings, registry)
    return registry


def check_handlers(settings: Settings, registry: Registry) -> None:
    """Raise :class:`ConfigError` for settings that name handlers which do not exist.

    ``config.load`` cannot check these: it runs before the handlers are imported.
    """
    for name in settings.handler_concurrency:
        if name not in registry.handlers:
            known = ", ".join(sorted(registry.handlers)) or "none"
            raise ConfigError(
                f"names unknown handler {name!r} (handlers: {known})",
                file=settings.source,
                setting="handler_concurrency",
            )


def describe(settings: Settings, registry: Registry) -> str:
    """A human-readable summary of what would run: servers, handlers, pool, limits, endpoints."""
    check_handlers(settings, registry)
    lines = [f"settings: {settings.source}", *_servers(settings), *_handlers(settings, registry), *_limits(settings)]
    return "\n".join(lines)


def _servers(settings: Settings) -> list[str]:
    if not settings.servers:
        return [f"servers: none set, a local gearmand is started on 127.0.0.1:{settings.local_gearmand_port}"]
    lines = [f"servers: {len(settings.servers)}"]
    for server in settings.servers:
        host, port = parse_address(server)
        lines.append(f"  {host}:{port}")
    return lines


def _aliases(registry: Registry, h: Handler) -> list[str]:
    return sorted(name for name, target in registry.functions.items() if target is h and name != h.name)


def _handlers(settings: Settings, registry: Registry) -> list[str]:
    handlers = sorted(registry.handlers.values(), key=lambda h: h.name)
    cpu = sum(h.cpu for h in handlers)
    lines = [
        f"handlers: {len(handlers)} from {settings.handlers_dir}/ ({cpu} cpu, {len(handlers) - cpu} async/thread), "
        f"{len(registry.functions)} function names"
    ]
    width = max((len(h.name) for h in handlers), default=0)
    for h in handlers:
        kind = "cpu" if h.cpu else ("async" if h.is_async else "thread")
        timeout = f"{h.timeout:g}s" if h.timeout is not None else "none"
        limit = settings.handler_concurrency.get(h.name, h.concurrency)
        where = " (settings)" if h.name in settings.handler_concurrency else ""
        concurrency = f"{limit}{where}" if limit is not None else f"{settings.concurrency} (process limit)"
        parts = [f"  {h.name:<{width}}  {kind:<6} timeout={timeout} concurrency={concurrency}"]
        aliases = _aliases(registry, h)
        if aliases:
            parts.append(f"aliases={','.join(aliases)}")
        if h.retry.retries:
            parts.append(f"retries={h.retry.retries} retry_backoff={h.retry.backoff:g}s")
        if h.schedule is not None:
            parts.append(f"schedule={str(h.schedule)!r}")
        parts.append(f"file={h.file}")
        lines.append(" ".join(parts))
    return lines


def _limits(settings: Settings) -> list[str]:
    reasons = []
    if settings.max_tasks_per_child:
        reasons.append(f"after {settings.max_tasks_per_child} jobs")
    if settings.max_child_rss:
        reasons.append(f"above {settings.max_child_rss} MiB RSS")
    recycle = " or ".join(reasons) or "never"
    if settings.metrics:
        host, port = parse_address(settings.metrics, default_host="127.0.0.1")
        metrics = f"http://{host}:{port}/metrics and /healthz"
    else:
        metrics = "off"
    return [
        f"concurrency: {settings.concurrency} jobs in flight, {settings.grab_pipeline} GRAB_JOB pipelined per server",
        f"process pool: {settings.processes} processes for cpu handlers, recycled {recycle}",
        f"shutdown grace: {settings.grace_period:g}s; timeout margin: {settings.timeout_margin:g}s",
        f"reconnect: {settings.reconnect_min:g}s to {settings.reconnect_max:g}s; "
        f"connect timeout {settings.connect_timeout:g}s",
        f"failures: {settings.failure_style}; max packet {settings.max_packet_size} bytes",
        f"metrics: {metrics}",
        f"logs: {settings.log_format}, level {settings.log_level}, file {settings.log_file or 'none'}; "
        f"pid file {settings.pid_file or 'none'}",
    ]
