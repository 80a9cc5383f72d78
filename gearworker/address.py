"""Job server addresses: ``host:port`` text to a ``(host, port)`` pair.

Shared by the settings, the worker, the client and the web app, so every part
reads an address the same way.
"""

from __future__ import annotations

__all__ = ["DEFAULT_PORT", "parse_address"]

#: gearmand's registered port.
DEFAULT_PORT = 4730


def parse_address(
    text: str, *, default_host: str = "127.0.0.1", default_port: int | None = DEFAULT_PORT
) -> tuple[str, int]:
    """Parse ``host:port``, ``host``, ``:port``, ``port`` or ``[v6]:port``.

    A bare number is a port (no one names a host ``9100``).  With
    ``default_port=None`` the port is required.  Raises :class:`ValueError`
    with the offending text.
    """
    text = text.strip()
    if not text:
        raise ValueError("empty server address")
    if text.isdigit():
        host, port_text = "", text
    elif text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            # "[::1:4730" or "[::1]4730" is a typo, not an address: say so now, not at connect time.
            raise ValueError(f"bad address {text!r}: expected [IPV6]:PORT")
        port_text = rest.removeprefix(":")
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    else:
        host, port_text = text, ""
    if not port_text:
        if default_port is None:
            raise ValueError(f"no port in {text!r}: expected HOST:PORT or PORT")
        port_text = str(default_port)
    try:
        port = int(port_text)
    except ValueError:
        raise ValueError(f"bad port in {text!r}: expected HOST:PORT") from None
    if not 0 < port < 65536:
        raise ValueError(f"port out of range in {text!r}")
    return host or default_host, port
