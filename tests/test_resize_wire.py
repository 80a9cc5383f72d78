"""gearworker.resize.wire: the request (GWIMG1) and result (GWRES1) formats, without libvips.

Every test here but the first works on bytes alone; the last one checks that a
client using the wire format never loads libvips.
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys

import pytest
from support import photo_jpeg

from gearworker.resize import (
    DEFAULT_SIZES,
    Copy,
    ImageError,
    Limits,
    Options,
    Resized,
    Source,
    pack_request,
    pack_result,
    parse_request,
    run,
    unpack_result,
)

LIMITS = Limits()


def test_unpack_result_refuses_garbage_and_truncation() -> None:
    """A result cut short or not a result at all is an ImageError, not a silently short copy."""
    result = run(pack_request(photo_jpeg(), sizes=[64]), LIMITS)
    with pytest.raises(ImageError, match="truncated"):
        unpack_result(result[:-1])
    with pytest.raises(ImageError, match="not a resize result"):
        unpack_result(b"hello")


def test_pack_request_round_trips_through_parse_request() -> None:
    """The options pack_request writes are the ones the worker reads, sizes largest first; the image is untouched."""
    request = parse_request(pack_request(b"\xff\xd8image", sizes=[256, 1024], format="jpg", quality=70), LIMITS)
    assert request.options == Options(sizes=(1024, 256), format="jpeg", quality=70)
    assert (request.image, request.source) == (b"\xff\xd8image", None)


def test_pack_request_checks_the_options_before_anything_is_sent() -> None:
    """A bad option fails on the client, in pack_request, not later on the worker."""
    with pytest.raises(ImageError, match="format must be one of"):
        pack_request(b"x", format="bmp")


def test_parse_request_tells_the_three_kinds_of_workload_apart() -> None:
    """Raw bytes get the default options; JSON gives either base64 image bytes or file mode paths and a name."""
    raw = parse_request(b"\x89PNG...", LIMITS)
    assert (raw.image, raw.options.sizes) == (b"\x89PNG...", DEFAULT_SIZES)
    b64 = parse_request(json.dumps({"image_b64": base64.b64encode(b"abc").decode(), "sizes": [9]}).encode(), LIMITS)
    assert (b64.image, b64.options.sizes) == (b"abc", (9,))
    files = parse_request(b' {"source": "/s/a.jpg", "output_dir": "/o", "name": "cat", "format": "png"}', LIMITS)
    assert (files.image, files.source, files.output_dir, files.name, files.options.format) == (
        None,
        "/s/a.jpg",
        "/o",
        "cat",
        "png",
    )


@pytest.mark.parametrize(
    ("workload", "message"),
    [
        (b"{[1, 2]", "starts with '{' but is not valid JSON"),
        (b'{"image_b64": "", "source": "/a", "output_dir": "/b"}', "either image_b64 or source/output_dir"),
        (b'{"source": "/a"}', "file mode needs 'output_dir'"),
        (b'{"source": "/a", "output_dir": "/b", "name": "../x"}', "plain file name stem"),
        (b"GWIMG1\n[]\n", "request header must be a JSON object"),
    ],
    ids=["not-json-object", "both-modes", "no-output-dir", "bad-name", "header-not-object"],
)
def test_parse_request_refuses_malformed_workloads(workload: bytes, message: str) -> None:
    """Each malformed envelope is an ImageError naming the problem."""
    with pytest.raises(ImageError, match=re.escape(message)):
        parse_request(workload, LIMITS)


def test_pack_result_round_trips_through_unpack_result_and_ignores_trailing_bytes() -> None:
    """unpack_result gives back each copy as packed, in order; bytes after the last copy (progress) are ignored."""
    copies = [Copy(512, 512, 384, "webp", b"A" * 5), Copy(64, 64, 48, "webp", b""), Copy(32, 32, 24, "webp", b"bc")]
    packed = pack_result(Resized(Source("jpeg", 1200, 900), copies))
    assert unpack_result(packed + b"25% Complete\n") == copies
    header = json.loads(packed.split(b"\n")[1])
    assert header["source"] == {"format": "jpeg", "width": 1200, "height": 900}


def test_unpack_result_refuses_a_malformed_header() -> None:
    """A GWRES1 header missing fields is an ImageError, not a KeyError."""
    with pytest.raises(ImageError, match="malformed result header"):
        unpack_result(b'GWRES1\n{"copies": [{"size": 1}]}\n')


def test_the_wire_format_never_loads_libvips() -> None:
    """A client packing requests and unpacking results (the web app) never imports pyvips."""
    code = (
        "import sys\n"
        "from gearworker.resize import Copy, Resized, Source, pack_request, pack_result, unpack_result\n"
        "unpack_result(pack_result(Resized(Source('png', 1, 1), [Copy(1, 1, 1, 'png', b'x')])))\n"
        "pack_request(b'x', sizes=[10])\n"
        "assert 'pyvips' not in sys.modules, 'pyvips was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
