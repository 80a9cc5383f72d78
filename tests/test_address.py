"""gearworker.address.parse_address: every form in its docstring, the defaults, and its error messages."""

from __future__ import annotations

import pytest

from gearworker.address import DEFAULT_PORT, parse_address


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gearman.example:4731", ("gearman.example", 4731)),  # host:port
        ("10.0.0.5:1", ("10.0.0.5", 1)),
        ("gearman.example", ("gearman.example", DEFAULT_PORT)),  # host
        (":4999", ("127.0.0.1", 4999)),  # :port
        ("4999", ("127.0.0.1", 4999)),  # port
        ("[::1]:4731", ("::1", 4731)),  # [v6]:port
        ("[2001:db8::7]:65535", ("2001:db8::7", 65535)),
        ("[::1]", ("::1", DEFAULT_PORT)),  # [v6] without a port
        ("::1", ("::1", DEFAULT_PORT)),  # a bare v6 address is a host, never host:port
        ("gearman.example:", ("gearman.example", DEFAULT_PORT)),  # an empty port is no port
        ("  h:4731 \n", ("h", 4731)),  # surrounding blanks (from a file or a comma list) are ignored
    ],
)
def test_each_documented_form_parses(text: str, expected: tuple[str, int]) -> None:
    """host:port, host, :port, port and [v6]:port all give (host, port); missing parts take the defaults."""
    assert parse_address(text) == expected


def test_the_default_port_is_gearmands_registered_4730() -> None:
    """A host alone means gearmand's registered port."""
    assert DEFAULT_PORT == 4730
    assert parse_address("h") == ("h", 4730)


def test_a_bare_number_is_a_port_not_a_host() -> None:
    """ "9100" is port 9100 on the default host (no one names a host 9100)."""
    assert parse_address("9100", default_host="0.0.0.0") == ("0.0.0.0", 9100)


def test_default_host_fills_in_only_a_missing_host() -> None:
    """default_host is used for ":port" and "port", never over a given host."""
    assert parse_address(":80", default_host="::") == ("::", 80)
    assert parse_address("h:80", default_host="::") == ("h", 80)


def test_default_port_fills_in_a_missing_port() -> None:
    """default_port replaces 4730 when the text has no port."""
    assert parse_address("h", default_port=9100) == ("h", 9100)
    assert parse_address("[::1]", default_port=9100) == ("::1", 9100)
    assert parse_address("h:80", default_port=9100) == ("h", 80)


@pytest.mark.parametrize("text", ["h", "h:", "[::1]", "::1"])
def test_without_a_default_port_a_port_is_required(text: str) -> None:
    """default_port=None: an address with no port is an error naming the text and the expected forms."""
    with pytest.raises(ValueError) as info:
        parse_address(text, default_port=None)
    assert str(info.value) == f"no port in {text!r}: expected HOST:PORT or PORT"


@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_an_empty_address_is_an_error(text: str) -> None:
    """Nothing but blanks: "empty server address"."""
    with pytest.raises(ValueError, match=r"^empty server address$"):
        parse_address(text)


@pytest.mark.parametrize("text", ["h:port", "h:47x0", "[::1]:abc", "h:4.5"])
def test_a_port_that_is_not_a_number_is_an_error_naming_the_text(text: str) -> None:
    """ "bad port in 'TEXT': expected HOST:PORT" (the ValueError from int() is not chained)."""
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert str(info.value) == f"bad port in {text!r}: expected HOST:PORT"
    assert info.value.__cause__ is None and info.value.__suppress_context__


@pytest.mark.parametrize("text", ["0", "h:0", "65536", "h:99999", "h:-1", "[::1]:70000"])
def test_a_port_outside_1_to_65535_is_an_error(text: str) -> None:
    """Port 0 and ports above 65535 are rejected with "port out of range in 'TEXT'"."""
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert str(info.value) == f"port out of range in {text!r}"


def test_the_error_quotes_the_stripped_text() -> None:
    """The message shows what was parsed, without the blanks around it."""
    with pytest.raises(ValueError, match=r"^bad port in 'h:x': expected HOST:PORT$"):
        parse_address("  h:x  ")


@pytest.mark.parametrize("text", ["[::1]4730", "[::1:4730", "[::1", "[::1]x"])
def test_a_malformed_bracketed_v6_address_is_an_error(text: str) -> None:
    """A missing "]" or a port not after ":" is refused when read, not turned into some other address."""
    with pytest.raises(ValueError) as info:
        parse_address(text)
    assert str(info.value) == f"bad address {text!r}: expected [IPV6]:PORT"
