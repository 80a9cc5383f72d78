"""gearworker.resize.job and the handler: one ``resize`` job from workload to result.

The registered handler called in-process (the worker end to end is in
test_resize_worker.py), and :func:`run`'s answer to every kind of bad input:
a clear :class:`ImageError`, never a crash.
"""

from __future__ import annotations

import re

import pytest
from images import samples
from support import ROOT, photo_jpeg

from gearworker.resize import ImageError, Limits, pack_request, run, unpack_result
from gearworker.worker.job import CpuJob, CpuJobSpec
from gearworker.worker.registry import load_module

LIMITS = Limits()


def test_handler_reports_progress_once_per_copy() -> None:
    """The registered handler sends WORK_STATUS i/n after each copy, then returns the packed result."""
    module = load_module(ROOT / "handlers" / "resize.py")
    events: list[tuple[str, tuple[bytes, ...]]] = []
    job = CpuJob(
        CpuJobSpec(token=0, function="resize", handle=b"H:1", unique=b"", workload=photo_jpeg()),
        send=lambda kind, args: events.append((kind, args)),
    )
    result = module.resize(job)
    assert events == [("status", (str(i).encode(), b"4")) for i in range(1, 5)]
    assert len(unpack_result(result)) == 4


# --- bad input: a clear ImageError, never a crash ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda jpg: b"this is not an image at all", "not an image"),
        (lambda jpg: b"", "empty input"),
        (samples.truncated, "premature end"),
        (lambda jpg: samples.png_bomb(), "over the limit of 100000000 pixels"),
        (lambda jpg: samples.SVG, "unsupported image format (svgload)"),
        (lambda jpg: pack_request(jpg)[:20], "no JSON header"),
        (lambda jpg: b'{"sizes": [100]', "not valid JSON"),
        (lambda jpg: b'{"image_b64": "@@@"}', "not valid base64"),
        (lambda jpg: b'{"image_b64": "", "size": [100]}', "unknown option(s) ['size']"),
        (lambda jpg: b'{"image_b64": "", "sizes": [0]}', "integer from 1 to 16384"),
        (lambda jpg: b'{"image_b64": "", "format": "bmp"}', "format must be one of"),
        (lambda jpg: b'{"image_b64": "", "quality": 101}', "quality must be"),
    ],
    ids=[
        "not-image",
        "empty",
        "truncated",
        "bomb",
        "svg",
        "bad-envelope",
        "bad-json",
        "bad-b64",
        "unknown-option",
        "bad-size",
        "bad-format",
        "bad-quality",
    ],
)
def test_bad_input_is_a_clear_image_error(make: object, message: str) -> None:
    """Each bad input raises ImageError naming the problem (the worker turns it into a failed job)."""
    assert callable(make)
    with pytest.raises(ImageError, match=_escaped(message)):
        run(make(photo_jpeg()), LIMITS)


def _escaped(text: str) -> str:
    return re.escape(text)


def test_oversize_upload_is_refused_before_parsing() -> None:
    """max_upload_bytes is checked on the image, with or without an options header."""
    with pytest.raises(ImageError, match="over the limit of 1000 bytes"):
        run(photo_jpeg(), Limits(max_upload_bytes=1000))
    with pytest.raises(ImageError, match="over the limit of 1000 bytes"):
        run(pack_request(photo_jpeg()), Limits(max_upload_bytes=1000))


def test_image_exactly_at_the_upload_limit_is_accepted_with_its_options_header() -> None:
    """The web app accepts an image of max_upload_bytes; the options header must not push it over."""
    jpeg = photo_jpeg()
    copies = unpack_result(run(pack_request(jpeg, sizes=[64]), Limits(max_upload_bytes=len(jpeg))))
    assert [c.size for c in copies] == [64]
