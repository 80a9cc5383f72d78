"""gearworker.resize.engine: the libvips fast path, each output opened again with Pillow.

Dimensions, orientation, format, alpha, colour profile, and that nothing is
ever upscaled.  Most tests go through :func:`gearworker.resize.run` (the way the
handler calls the engine); the header probe and the size plan are also tested
on their own.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from images import samples
from PIL import Image
from support import photo_jpeg

from gearworker.resize import Copy, ImageError, Limits, Source, pack_request, plan, probe, run, unpack_result

LIMITS = Limits()


def opened(copy: Copy) -> Image.Image:
    image = Image.open(io.BytesIO(copy.data))
    image.load()
    return image


def resize(workload: bytes, limits: Limits = LIMITS) -> list[Copy]:
    return unpack_result(run(workload, limits))


def test_raw_jpeg_gets_the_default_sizes_never_upscaled() -> None:
    """Raw bytes use the defaults: 2048 would upscale a 1200 px photo, so it is the original size instead."""
    copies = resize(photo_jpeg())
    assert [(c.size, c.width, c.height) for c in copies] == [
        (2048, 1200, 900),
        (1024, 1024, 768),
        (512, 512, 384),
        (256, 256, 192),
    ]
    for c in copies:
        image = opened(c)
        assert (image.format, image.size, c.format) == ("JPEG", (c.width, c.height), "jpeg")
        assert image.info.get("progressive"), "JPEG copies are progressive"


def test_exif_orientation_is_applied() -> None:
    """Orientation 6 (rotate 90 clockwise): a landscape file shows as portrait, its top-left mark now top-right."""
    copies = resize(pack_request(photo_jpeg(orientation=6), sizes=[600]))
    image = opened(copies[0]).convert("RGB")
    assert image.size == (450, 600)
    assert _near(image.getpixel((image.width - 10, 10)), samples.MARK)
    assert not _near(image.getpixel((10, 10)), samples.MARK)
    assert image.getexif().get(0x0112, 1) == 1, "no orientation tag left to rotate it twice"


def _near(pixel: object, colour: tuple[int, int, int], tolerance: int = 40) -> bool:
    assert isinstance(pixel, tuple)
    return all(abs(int(a) - b) <= tolerance for a, b in zip(pixel, colour, strict=False))


def test_icc_profile_is_kept_and_other_metadata_dropped() -> None:
    """The colour profile survives (colours stay right); EXIF does not (no GPS leaks) unless keep_metadata."""
    icc = samples.srgb_profile()
    data = photo_jpeg(800, 600, orientation=1, icc=icc)
    image = opened(resize(pack_request(data, sizes=[200]))[0])
    assert image.info.get("icc_profile") == icc
    assert "exif" not in image.info
    kept = opened(
        resize(
            json.dumps({"image_b64": base64.b64encode(data).decode(), "sizes": [200], "keep_metadata": True}).encode()
        )[0]
    )
    assert "exif" in kept.info


def test_alpha_is_kept_in_png_and_flattened_onto_white_in_jpeg() -> None:
    """RGBA PNG to PNG keeps transparency; to JPEG the transparent half becomes white, not black."""
    data = samples.rgba_png(400, 300)
    png = opened(resize(pack_request(data, sizes=[200], format="png"))[0])
    left, right = png.getpixel((10, 10)), png.getpixel((190, 10))
    assert png.mode == "RGBA" and isinstance(left, tuple) and isinstance(right, tuple)
    assert left[3] == 0 and right[3] == 255
    jpg = opened(resize(pack_request(data, sizes=[200]))[0]).convert("RGB")
    assert _near(jpg.getpixel((10, 10)), (255, 255, 255)) and _near(jpg.getpixel((190, 10)), (0, 0, 255))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_other_input_formats(fmt: str) -> None:
    """PNG, WebP and TIFF inputs resize like JPEG."""
    copies = resize(pack_request(samples.encode(samples.photo(640, 480), fmt), sizes=[320, 100]))
    assert [(c.width, c.height) for c in copies] == [(320, 240), (100, 75)]
    assert all(opened(c).format == "JPEG" for c in copies)


def test_gif_uses_the_first_frame_only() -> None:
    """An animated GIF gives one still copy of its first (green) frame."""
    image = opened(resize(pack_request(samples.animated_gif(), sizes=[150]))[0]).convert("RGB")
    assert image.size == (150, 100) and _near(image.getpixel((75, 50)), (0, 200, 0))


@pytest.mark.parametrize(("fmt", "pil_format"), [("webp", "WEBP"), ("avif", "AVIF"), ("png", "PNG")])
def test_output_formats_and_options_travel_with_the_bytes(fmt: str, pil_format: str) -> None:
    """pack_request carries sizes, format and quality; the result names the format of each copy."""
    copies = resize(pack_request(photo_jpeg(), sizes=[100, 300], format=fmt, quality=70))
    assert [(c.size, c.width, c.format) for c in copies] == [(300, 300, fmt), (100, 100, fmt)]
    assert {opened(c).format for c in copies} == {pil_format}


def test_quality_option_changes_the_jpeg() -> None:
    """A lower quality gives a smaller file."""
    low = resize(pack_request(photo_jpeg(), sizes=[512], quality=30))[0]
    high = resize(pack_request(photo_jpeg(), sizes=[512], quality=95))[0]
    assert len(low.data) < len(high.data)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "WEBP"])
def test_truncated_files_of_every_format_fail(fmt: str) -> None:
    """Half a file is an error in every input format, never a copy with grey or black rows."""
    with pytest.raises(ImageError):
        run(samples.truncated(samples.encode(samples.photo(600, 400), fmt)), LIMITS)


def test_pixel_limit_comes_from_the_limits() -> None:
    """max_image_pixels is the setting's value: 1200x900 passes at 1 MP + 80k and fails below."""
    assert resize(pack_request(photo_jpeg(), sizes=[64]), Limits(max_image_pixels=1_080_000))
    with pytest.raises(ImageError, match="1200x900"):
        run(photo_jpeg(), Limits(max_image_pixels=1_079_999))


@given(st.integers(1, 20000), st.integers(1, 20000), st.lists(st.integers(1, 16384), min_size=1, max_size=8))
def test_plan_never_upscales_and_keeps_the_aspect_ratio(width: int, height: int, sizes: list[int]) -> None:
    """Copies are largest first, within their bound and the original, and at most one pixel off the aspect ratio."""
    steps = plan(width, height, sizes)
    assert [s for s, _, _ in steps] == sorted({s for s, _, _ in steps}, reverse=True)
    for size, w, h in steps:
        assert 1 <= w <= width and 1 <= h <= height
        assert max(w, h) <= size
        assert abs(w * height - h * width) <= width + height  # rounding to whole pixels, nothing more
    covering = [s for s in sizes if s >= max(width, height)]
    if covering:
        assert steps[0] == (min(covering), width, height)
    assert len(steps) == len(set(sizes)) - max(0, len(set(covering)) - 1)


def test_probe_reads_the_header_and_swaps_the_sides_of_a_rotated_photo() -> None:
    """probe() gives format and displayed dimensions: EXIF orientation 6 turns 1200x900 into 900x1200."""
    assert probe(photo_jpeg(), LIMITS) == Source("jpeg", 1200, 900)
    assert probe(photo_jpeg(orientation=6), LIMITS) == Source("jpeg", 900, 1200)
    assert probe(samples.encode(samples.photo(64, 48), "PNG"), LIMITS) == Source("png", 64, 48)


def test_probe_refuses_a_bomb_from_its_header_alone() -> None:
    """A 20000x20000 PNG declared in a few kilobytes is refused by probe(), which decodes no pixel."""
    with pytest.raises(ImageError, match="20000x20000 = 400000000 pixels"):
        probe(samples.png_bomb(), LIMITS)
