"""``gearworker web``: serve the web app with uvicorn."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

import structlog

log = structlog.get_logger("gearworker.web")

DEFAULT_SERVER = "127.0.0.1:4730"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``gearworker web`` to the command line."""
    parser = sub.add_parser(
        "web",
        help="serve the web app (photos, jobs, servers)",
        description="Serve the web app: resize photos, submit jobs, watch the job servers.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``gearworker web`` (also used by ``python -m gearworker.web``)."""
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000)")
    parser.add_argument(
        "--server",
        action="append",
        dest="servers",
        metavar="HOST:PORT",
        help=f"job server, repeatable (default: the settings' servers, else {DEFAULT_SERVER})",
    )
    # Its own dest: a sub-parser's default would otherwise overwrite a global --settings.
    parser.add_argument(
        "--settings",
        dest="web_settings",
        metavar="FILE",
        help="settings file (default: $GEARWORKER_SETTINGS or ./settings.py)",
    )
    parser.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (default: auto, uvloop when installed)",
    )
    parser.add_argument("--max-upload-bytes", type=int, metavar="N", help="largest photo accepted, bytes")
    parser.add_argument("--storage-root", metavar="DIR", help="folder for photos (setting web_storage_root)")
    parser.add_argument(
        "--photo-mode", choices=["bytes", "file"], help="how photos reach the worker (setting web_photo_mode)"
    )
    parser.add_argument(
        "--allow-insecure-remote",
        action="store_const",
        const=True,
        default=None,
        help="listen on a non-loopback address without a login (setting web_allow_insecure_remote)",
    )
    parser.add_argument(
        "--metrics",
        metavar="HOST:PORT",
        help="also serve /metrics (gearmand's state) here without a login, for Prometheus (setting web_metrics)",
    )
    parser.add_argument(
        "--hash-password",
        action="store_true",
        help="read a password on stdin, print a web_password_hash for it, and exit",
    )


def run(args: argparse.Namespace) -> int:
    """Load the settings, then serve until SIGINT/SIGTERM; returns the exit status."""
    import uvicorn

    from ..config import load
    from ..errors import ConfigError
    from ..logs import configure as configure_logs
    from .app import ConsoleOptions, WebOptions, create_app
    from .security import is_loopback

    if args.hash_password:
        return _hash_password()
    try:
        settings = load(
            getattr(args, "web_settings", None) or getattr(args, "settings", None),
            overrides={
                "servers": args.servers,
                "max_upload_bytes": args.max_upload_bytes,
                "web_storage_root": args.storage_root,
                "web_photo_mode": args.photo_mode,
                "web_allow_insecure_remote": args.allow_insecure_remote,
                "web_metrics": args.metrics,
            },
        )
        options = WebOptions.from_settings(settings, listen_host=args.host, listen_port=args.port)
        console = ConsoleOptions.from_settings(settings)
    except ConfigError as e:
        print(f"gearworker web: {e}", file=sys.stderr)
        return 2
    if not is_loopback(args.host) and not settings.web_password_hash and not settings.web_allow_insecure_remote:
        print(
            f"gearworker web: refusing to listen on {args.host} without a login: anyone who can reach it could "
            "run jobs. Set web_password_hash (gearworker web --hash-password), or set "
            "web_allow_insecure_remote / --allow-insecure-remote when something else guards the port.",
            file=sys.stderr,
        )
        return 2
    configure_logs(settings.log_level, settings.log_format, settings.log_file)
    servers = settings.servers or [DEFAULT_SERVER]
    app = create_app(servers, options, console=console)
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        loop=args.loop,
        timeout_graceful_shutdown=3,
        lifespan="on",
    )
    log.info("web.listening", url=f"http://{args.host}:{args.port}/", servers=servers)
    web = app.state.web

    class _UvicornServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            web.end_streams()  # else SIGTERM waits out the graceful timeout for every open page
            super().handle_exit(sig, frame)

    # uvicorn re-raises the signal it stopped for once it has shut down.  With SIGTERM's default
    # action the process would then die by it (exit 143 under Docker/podman, a "failed" stop);
    # a finished graceful stop on SIGTERM is a clean exit, as for the worker: exit 0.  Installed
    # before serving, so a SIGTERM that arrives before uvicorn takes over also just exits.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    _UvicornServer(config).run()  # SIGINT is still re-raised: Ctrl-C ends as KeyboardInterrupt
    return 0


def _hash_password() -> int:
    """``--hash-password``: a password from stdin (or a prompt) to a ``web_password_hash`` line."""
    import getpass

    from .login import hash_password

    password = getpass.getpass("Password: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if len(password) < 8:
        print("gearworker web: use a password of at least 8 characters", file=sys.stderr)
        return 2
    print(hash_password(password))
    return 0


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)
