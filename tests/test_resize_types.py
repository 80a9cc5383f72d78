"""gearworker.resize.types: the options a job may set, and the copy type the web app serves."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gearworker.config import Settings
from gearworker.errors import GearworkerError
from gearworker.resize import DEFAULT_SIZES, Copy, ImageError, Limits, Options


def test_options_default_to_four_jpeg_copies_at_q85_on_white() -> None:
    """No options: 2048/1024/512/256 px JPEG at quality 85, alpha flattened onto white, metadata dropped."""
    assert Options.from_json({}) == Options() == Options(DEFAULT_SIZES, "jpeg", 85, (255, 255, 255), False)
    assert DEFAULT_SIZES == (2048, 1024, 512, 256)


@given(
    st.lists(st.integers(1, 16384), min_size=1, max_size=16),
    st.sampled_from(["jpeg", "webp", "avif", "png"]),
    st.integers(1, 100),
    st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)),
    st.booleans(),
)
def test_options_round_trip_through_json(
    sizes: list[int], fmt: str, quality: int, background: tuple[int, int, int], keep: bool
) -> None:
    """to_json writes what from_json reads back unchanged; sizes come back distinct and largest first."""
    options = Options.from_json(
        {
            "sizes": sizes,
            "format": fmt,
            "quality": quality,
            "background": "#{:02x}{:02x}{:02x}".format(*background),
            "keep_metadata": keep,
        }
    )
    assert options.sizes == tuple(sorted(set(sizes), reverse=True))
    assert options.background == background
    assert Options.from_json(options.to_json()) == options


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"size": [100]}, r"unknown option\(s\) \['size'\]"),
        ({"sizes": []}, "sizes must be a list of 1 to 16 integers"),
        ({"sizes": list(range(1, 18))}, "sizes must be a list of 1 to 16 integers"),
        ({"sizes": [True]}, "each size must be an integer from 1 to 16384"),
        ({"sizes": [16385]}, "each size must be an integer from 1 to 16384"),
        ({"format": "gif"}, "format must be one of"),
        ({"quality": 0}, "quality must be an integer from 1 to 100"),
        ({"quality": 50.5}, "quality must be an integer from 1 to 100"),
        ({"background": "white"}, "background must look like '#rrggbb'"),
    ],
    ids=["unknown", "no-sizes", "17-sizes", "bool-size", "huge-size", "format", "quality-0", "quality-float", "colour"],
)
def test_bad_options_are_image_errors_naming_the_option(obj: dict[str, object], message: str) -> None:
    """Each bad option value fails with an ImageError (a GearworkerError and a ValueError) saying what is allowed."""
    with pytest.raises(ImageError, match=message) as caught:
        Options.from_json(obj)
    assert isinstance(caught.value, GearworkerError) and isinstance(caught.value, ValueError)


def test_format_accepts_jpg_and_any_case() -> None:
    """'JPG' and 'jpg' both mean jpeg."""
    assert Options.from_json({"format": "JPG"}).format == Options.from_json({"format": "jpg"}).format == "jpeg"


@pytest.mark.parametrize(
    ("fmt", "media_type", "extension"),
    [
        ("jpeg", "image/jpeg", "jpg"),
        ("JPEG", "image/jpeg", "jpg"),
        ("webp", "image/webp", "webp"),
        ("avif", "image/avif", "avif"),
        ("png", "image/png", "png"),
        ("tiff", "image/tiff", "tiff"),
        ("strange", "application/octet-stream", "strange"),
    ],
)
def test_a_copy_knows_its_media_type_and_file_extension(fmt: str, media_type: str, extension: str) -> None:
    """What the web app serves a copy as, and the extension of its download name."""
    copy = Copy(256, 256, 171, fmt, b"")
    assert (copy.media_type, copy.extension) == (media_type, extension)


def test_limits_default_to_50_mib_100_megapixels_and_no_file_mode() -> None:
    """The defaults match the settings' defaults; no storage roots means file mode is off."""
    assert Limits() == Limits(50 * 1024 * 1024, 100_000_000, ())
    settings = Settings()
    assert (Limits().max_upload_bytes, Limits().max_image_pixels) == (
        settings.max_upload_bytes,
        settings.max_image_pixels,
    )
    assert not settings.storage_roots
