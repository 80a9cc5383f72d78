"""The resize handler, called in-process (the worker end to end is in test_resize_worker.py).

Every output is opened again with Pillow and checked: dimensions, orientation,
format, alpha, colour profile, and that nothing is ever upscaled.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from images import samples
from PIL import Image

from gearworker.worker.registry import load_module
from gearworker.imaging import (
    Copy,
    ImageError,
    Limits,
    pack_request,
    plan,
    run,
    unpack_result,
)
from gearworker.worker.job import CpuJob, CpuJobSpec

ROOT = Path(__file__).resolve().parent.parent
LIMITS = Limits()


@pytest.fixture(scope="module")
def photo_jpeg() -> bytes:
    return samples.jpeg(samples.photo(1200, 900))


def opened(copy: Copy) -> Image.Image:
    image = Image.open(io.BytesIO(copy.data))
    image.load()
    return image


def resize(workload: bytes, limits: Limits = LIMITS) -> list[Copy]:
    return unpack_result(run(workload, limits))


def test_raw_jpeg_gets_the_default_sizes_never_upscaled(photo_jpeg: bytes) -> None:
    """Raw bytes use the defaults: 2048 would upscale a 1200 px photo, so it is the original size instead."""
    copies = resize(photo_jpeg)
    assert [(c.size, c.width, c.height) for c in copies] == [
        (2048, 1200, 900), (1024, 1024, 768), (512, 512, 384), (256, 256, 192)]
    for c in copies:
        image = opened(c)
        assert (image.format, image.size, c.format) == ("JPEG", (c.width, c.height), "jpeg")
        assert image.info.get("progressive"), "JPEG copies are progressive"


def test_handler_reports_progress_once_per_copy(photo_jpeg: bytes) -> None:
    """The registered handler sends WORK_STATUS i/n after each copy, then returns the packed result."""
    module = load_module(ROOT / "handlers" / "resize.py")
    events: list[tuple[str, tuple[bytes, ...]]] = []
    job = CpuJob(CpuJobSpec(token=0, function="resize", handle=b"H:1", unique=b"", workload=photo_jpeg),
                 send=lambda kind, args: events.append((kind, args)))
    result = module.resize(job)
    assert events == [("status", (str(i).encode(), b"4")) for i in range(1, 5)]
    assert len(unpack_result(result)) == 4


def test_exif_orientation_is_applied() -> None:
    """Orientation 6 (rotate 90 clockwise): a landscape file shows as portrait, its top-left mark now top-right."""
    copies = resize(pack_request(samples.jpeg(samples.photo(1200, 900), orientation=6), sizes=[600]))
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
    data = samples.jpeg(samples.photo(800, 600), orientation=1, icc=icc)
    image = opened(resize(pack_request(data, sizes=[200]))[0])
    assert image.info.get("icc_profile") == icc
    assert "exif" not in image.info
    kept = opened(resize(json.dumps({"image_b64": base64.b64encode(data).decode(), "sizes": [200],
                                     "keep_metadata": True}).encode())[0])
    assert "exif" in kept.info


def test_alpha_is_kept_in_png_and_flattened_onto_white_in_jpeg() -> None:
    """RGBA PNG to PNG keeps transparency; to JPEG the transparent half becomes white, not black."""
    data = samples.rgba_png(400, 300)
    png = opened(resize(pack_request(data, sizes=[200], format="png"))[0])
    assert png.mode == "RGBA" and png.getpixel((10, 10))[3] == 0 and png.getpixel((190, 10))[3] == 255  # type: ignore[index]
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
def test_output_formats_and_options_travel_with_the_bytes(photo_jpeg: bytes, fmt: str, pil_format: str) -> None:
    """pack_request carries sizes, format and quality; the result names the format of each copy."""
    copies = resize(pack_request(photo_jpeg, sizes=[100, 300], format=fmt, quality=70))
    assert [(c.size, c.width, c.format) for c in copies] == [(300, 300, fmt), (100, 100, fmt)]
    assert {opened(c).format for c in copies} == {pil_format}


def test_quality_option_changes_the_jpeg(photo_jpeg: bytes) -> None:
    """A lower quality gives a smaller file."""
    low = resize(pack_request(photo_jpeg, sizes=[512], quality=30))[0]
    high = resize(pack_request(photo_jpeg, sizes=[512], quality=95))[0]
    assert len(low.data) < len(high.data)


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
    ids=["not-image", "empty", "truncated", "bomb", "svg", "bad-envelope", "bad-json", "bad-b64", "unknown-option",
         "bad-size", "bad-format", "bad-quality"],
)
def test_bad_input_is_a_clear_image_error(photo_jpeg: bytes, make: object, message: str) -> None:
    """Each bad input raises ImageError naming the problem (the worker turns it into a failed job)."""
    assert callable(make)
    with pytest.raises(ImageError, match=_escaped(message)):
        run(make(photo_jpeg), LIMITS)


def _escaped(text: str) -> str:
    return re.escape(text)


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "TIFF", "WEBP"])
def test_truncated_files_of_every_format_fail(fmt: str) -> None:
    """Half a file is an error in every input format, never a copy with grey or black rows."""
    with pytest.raises(ImageError):
        run(samples.truncated(samples.encode(samples.photo(600, 400), fmt)), LIMITS)


def test_oversize_upload_is_refused_before_parsing(photo_jpeg: bytes) -> None:
    """max_upload_bytes is checked on the image, with or without an options header."""
    with pytest.raises(ImageError, match="over the limit of 1000 bytes"):
        run(photo_jpeg, Limits(max_upload_bytes=1000))
    with pytest.raises(ImageError, match="over the limit of 1000 bytes"):
        run(pack_request(photo_jpeg), Limits(max_upload_bytes=1000))


def test_image_exactly_at_the_upload_limit_is_accepted_with_its_options_header(photo_jpeg: bytes) -> None:
    """The web app accepts an image of max_upload_bytes; the options header must not push it over."""
    copies = unpack_result(run(pack_request(photo_jpeg, sizes=[64]), Limits(max_upload_bytes=len(photo_jpeg))))
    assert [c.size for c in copies] == [64]


def test_pixel_limit_comes_from_the_limits(photo_jpeg: bytes) -> None:
    """max_image_pixels is the setting's value: 1200x900 passes at 1 MP + 80k and fails below."""
    assert resize(pack_request(photo_jpeg, sizes=[64]), Limits(max_image_pixels=1_080_000))
    with pytest.raises(ImageError, match="1200x900"):
        run(photo_jpeg, Limits(max_image_pixels=1_079_999))


def test_unpack_result_refuses_garbage_and_truncation(photo_jpeg: bytes) -> None:
    """A result cut short or not a result at all is an ImageError, not a silently short copy."""
    result = run(pack_request(photo_jpeg, sizes=[64]), LIMITS)
    with pytest.raises(ImageError, match="truncated"):
        unpack_result(result[:-1])
    with pytest.raises(ImageError, match="not a resize result"):
        unpack_result(b"hello")


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


# --- file mode ------------------------------------------------------------------------------------------------------


@pytest.fixture
def storage(tmp_path: Path, photo_jpeg: bytes) -> Path:
    root = tmp_path / "shared"
    (root / "in").mkdir(parents=True)
    (root / "in" / "photo.jpg").write_bytes(photo_jpeg)
    return root


def file_job(source: Path | str, output_dir: Path | str, **options: object) -> bytes:
    return json.dumps({"source": str(source), "output_dir": str(output_dir), **options}).encode()


def test_file_mode_writes_each_copy_and_names_the_files(storage: Path) -> None:
    """A JSON job naming a source and an output folder inside the roots writes <name>-<size>.<ext> files."""
    limits = Limits(storage_roots=(str(storage),))
    out = storage / "out" / "nested"
    answer = json.loads(run(file_job(storage / "in" / "photo.jpg", out, sizes=[300, 100], format="webp"), limits))
    assert [(c["size"], c["width"], c["height"], Path(c["path"]).name) for c in answer["copies"]] == [
        (300, 300, 225, "photo-300.webp"), (100, 100, 75, "photo-100.webp")]
    assert answer["source"]["width"] == 1200
    for c in answer["copies"]:
        with Image.open(c["path"]) as image:
            assert image.format == "WEBP" and image.width == c["width"]
    assert sorted(p.name for p in out.iterdir()) == ["photo-100.webp", "photo-300.webp"], "no temp files left"


def test_file_mode_is_off_without_storage_roots(storage: Path) -> None:
    """With no storage_roots configured, file jobs are refused."""
    with pytest.raises(ImageError, match="no storage_roots"):
        run(file_job(storage / "in" / "photo.jpg", storage / "out"), LIMITS)


def test_file_mode_refuses_paths_outside_the_roots(storage: Path, tmp_path: Path) -> None:
    """Outside paths, '..' and symlinks pointing out are refused for both source and output folder."""
    limits = Limits(storage_roots=(str(storage / "in"),))
    outside = tmp_path / "secret.jpg"
    outside.write_bytes((storage / "in" / "photo.jpg").read_bytes())
    (storage / "in" / "link.jpg").symlink_to(outside)
    (storage / "in" / "outdir").symlink_to(tmp_path)
    good_out = storage / "in" / "out"
    cases = [
        (file_job(outside, good_out), "outside the storage roots"),
        (file_job(f"{storage}/in/../in/photo.jpg", good_out), "contains '..'"),
        (file_job(storage / "in" / "link.jpg", good_out), "outside the storage roots"),
        (file_job(storage / "in" / "photo.jpg", storage / "in" / "outdir"), "outside the storage roots"),
        (file_job(storage / "in" / "photo.jpg", storage / "in" / "outdir" / "new"), "outside the storage roots"),
        (file_job("in/photo.jpg", good_out), "absolute path"),
        (file_job(storage / "in", good_out), "not a regular file"),
    ]
    for workload, message in cases:
        with pytest.raises(ImageError, match=_escaped(message)):
            run(workload, limits)
    assert not (tmp_path / "new").exists() and not good_out.exists()


def test_file_mode_replaces_a_symlink_at_the_target_instead_of_writing_through_it(storage: Path,
                                                                                  tmp_path: Path) -> None:
    """A planted symlink named like an output file is replaced; the file it pointed at is untouched."""
    limits = Limits(storage_roots=(str(storage),))
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    out = storage / "out"
    out.mkdir()
    (out / "photo-100.jpg").symlink_to(victim)
    run(file_job(storage / "in" / "photo.jpg", out, sizes=[100]), limits)
    assert victim.read_bytes() == b"keep me"
    assert not os.path.islink(out / "photo-100.jpg")


def test_command_line_pack_and_unpack(tmp_path: Path, photo_jpeg: bytes, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m gearworker.imaging pack/unpack`: the shell side of the gearman CLI examples in docs/resize.md."""
    from gearworker.imaging import main

    (tmp_path / "photo.jpg").write_bytes(photo_jpeg)
    (tmp_path / "result.bin").write_bytes(
        run(pack_request(photo_jpeg, sizes=[300, 100], format="webp"), LIMITS) + b"25% Complete\n")
    assert main(["unpack", str(tmp_path / "result.bin"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["100.webp", "300.webp"]
    assert "300x225\twebp" in capsys.readouterr().out
    assert main(["nonsense"]) == 2
