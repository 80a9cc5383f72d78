"""gearworker.resize.cli: ``python -m gearworker.resize pack|unpack`` for the gearman CLI examples."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from support import photo_jpeg

from gearworker.resize import Limits, pack_request, parse_request, run
from gearworker.resize.cli import main

LIMITS = Limits()


def test_command_line_pack_and_unpack(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`python -m gearworker.resize pack/unpack`: the shell side of the gearman CLI examples in docs/resize.md."""
    (tmp_path / "photo.jpg").write_bytes(photo_jpeg())
    (tmp_path / "result.bin").write_bytes(
        run(pack_request(photo_jpeg(), sizes=[300, 100], format="webp"), LIMITS) + b"25% Complete\n"
    )
    assert main(["unpack", str(tmp_path / "result.bin"), str(tmp_path / "out")]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["100.webp", "300.webp"]
    assert "300x225\twebp" in capsys.readouterr().out
    assert main(["nonsense"]) == 2


def test_python_dash_m_packs_a_request_the_worker_reads(tmp_path: Path) -> None:
    """`python -m gearworker.resize pack IMAGE 1024,256 webp 80` writes a GWIMG1 workload with those options."""
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8not really a jpeg")
    done = subprocess.run(
        [sys.executable, "-m", "gearworker.resize", "pack", str(tmp_path / "photo.jpg"), "1024,256", "webp", "80"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    request = parse_request(done.stdout, LIMITS)
    assert (request.image, request.options.sizes, request.options.format, request.options.quality) == (
        b"\xff\xd8not really a jpeg",
        (1024, 256),
        "webp",
        80,
    )
