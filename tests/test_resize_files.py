"""gearworker.resize.files: file mode reads and writes only inside the storage roots.

The first tests run whole file-mode jobs through :func:`gearworker.resize.run`;
the last ones call the sandbox's functions directly.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from PIL import Image
from support import photo_jpeg

from gearworker.resize import Copy, ImageError, Limits, Resized, Source, run
from gearworker.resize.files import default_name, inside_roots, read_source, write_copies

LIMITS = Limits()


def _escaped(text: str) -> str:
    return re.escape(text)


@pytest.fixture
def storage(tmp_path: Path) -> Path:
    root = tmp_path / "shared"
    (root / "in").mkdir(parents=True)
    (root / "in" / "photo.jpg").write_bytes(photo_jpeg())
    return root


def file_job(source: Path | str, output_dir: Path | str, **options: object) -> bytes:
    return json.dumps({"source": str(source), "output_dir": str(output_dir), **options}).encode()


def test_file_mode_writes_each_copy_and_names_the_files(storage: Path) -> None:
    """A JSON job naming a source and an output folder inside the roots writes <name>-<size>.<ext> files."""
    limits = Limits(storage_roots=(str(storage),))
    out = storage / "out" / "nested"
    answer = json.loads(run(file_job(storage / "in" / "photo.jpg", out, sizes=[300, 100], format="webp"), limits))
    assert [(c["size"], c["width"], c["height"], Path(c["path"]).name) for c in answer["copies"]] == [
        (300, 300, 225, "photo-300.webp"),
        (100, 100, 75, "photo-100.webp"),
    ]
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


def test_file_mode_replaces_a_symlink_at_the_target_instead_of_writing_through_it(
    storage: Path, tmp_path: Path
) -> None:
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


def test_inside_roots_returns_the_resolved_path_and_refuses_the_rest(tmp_path: Path) -> None:
    """A path inside a root comes back with its symlinks resolved; relative, NUL, '..' and outside paths are refused."""
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "link").symlink_to(root / "a")
    assert inside_roots(str(root / "link" / "x.jpg"), [str(root)], what="source") == root / "a" / "x.jpg"
    for path, message in [
        ("a/x.jpg", "absolute path"),
        (f"{root}/x\x00.jpg", "absolute path"),
        (f"{root}/a/../a/x.jpg", "contains '..'"),
        (str(tmp_path / "x.jpg"), "outside the storage"),
    ]:
        with pytest.raises(ImageError, match=_escaped(message)):
            inside_roots(path, [str(root)], what="source")
    with pytest.raises(ImageError, match="no storage_roots"):
        inside_roots(str(root / "a"), [], what="source")


def test_read_source_refuses_a_file_over_the_upload_limit(tmp_path: Path) -> None:
    """max_upload_bytes bounds a file-mode source too, checked on the open file before reading it."""
    (tmp_path / "big.jpg").write_bytes(b"x" * 101)
    limits = Limits(max_upload_bytes=100, storage_roots=(str(tmp_path),))
    with pytest.raises(ImageError, match="source of 101 bytes is over the limit of 100 bytes"):
        read_source(str(tmp_path / "big.jpg"), limits)
    (tmp_path / "ok.jpg").write_bytes(b"x" * 100)
    assert read_source(str(tmp_path / "ok.jpg"), limits) == b"x" * 100


def test_write_copies_names_files_by_size_and_format_extension(tmp_path: Path) -> None:
    """Each copy becomes <name>-<size>.<ext> (jpg for JPEG) with its bytes, and no temporary file stays behind."""
    result = Resized(Source("png", 10, 10), [Copy(10, 10, 10, "jpeg", b"big"), Copy(5, 5, 5, "jpeg", b"s")])
    written = write_copies(result, str(tmp_path / "out"), "cat", Limits(storage_roots=(str(tmp_path),)))
    assert [(w["path"], w["bytes"]) for w in written] == [
        (str(tmp_path / "out" / "cat-10.jpg"), 3),
        (str(tmp_path / "out" / "cat-5.jpg"), 1),
    ]
    assert sorted(os.listdir(tmp_path / "out")) == ["cat-10.jpg", "cat-5.jpg"]
    assert (tmp_path / "out" / "cat-10.jpg").read_bytes() == b"big"


def test_default_name_is_the_source_stem_made_safe() -> None:
    """Copies of '/in/my photo.jpg' are named 'my_photo-<size>...': no space or odd character reaches a file name."""
    assert default_name("/in/my photo.jpg") == "my_photo"
    assert default_name("/in/holiday.2024.jpg") == "holiday.2024"
    assert default_name("/") == "image"
