"""The resize handler end to end: real gearmand, the real worker (``gearworker run``), the ``gearman`` CLI.

One worker with a pool of one process serves the whole module: every bad input
must fail its job *and* leave that process able to run the next one.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from gearmand import Gearmand
from images import samples
from PIL import Image
from support import ROOT, photo_jpeg, wait_until

from gearworker.client import Client, Progress
from gearworker.resize import pack_request, unpack_result

MAX_UPLOAD = 1_000_000


@dataclass
class Served:
    gearmand: Gearmand
    storage: Path
    worker: subprocess.Popen[bytes]

    def gearman(self, workload: bytes, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run one job with the gearman CLI, the workload on stdin (or as an argument with -s)."""
        return subprocess.run(
            ["gearman", "-p", str(self.gearmand.port), "-f", "resize", *args],
            input=workload,
            capture_output=True,
            timeout=60,
            check=False,
        )


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    storage = tmp_path_factory.mktemp("storage")
    gearmand = Gearmand().start()
    # Settings through the environment: the pool processes inherit it, as they would a settings file's path.
    env = {
        **os.environ,
        "GEARWORKER_STORAGE_ROOTS": json.dumps([str(storage)]),
        "GEARWORKER_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "GEARWORKER_MAX_IMAGE_PIXELS": "50000000",
    }
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gearworker",
            "run",
            "--server",
            gearmand.address,
            "--handlers",
            str(ROOT / "handlers"),
            "--processes",
            "1",
            "--log-format",
            "json",
        ],
        cwd=storage,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: gearmand.status().get("resize", (0, 0, 0))[2] >= 1,
            30,
            what="a worker to register 'resize'",
            process=worker,
        )
        yield Served(gearmand, storage, worker)
    finally:
        worker.terminate()
        worker.wait(30)
        gearmand.stop()


@pytest.fixture(scope="module")
def portrait_jpeg() -> bytes:
    """Stored landscape 1600x1200, EXIF orientation 6: displayed as a 1200x1600 portrait."""
    return photo_jpeg(1600, 1200, orientation=6, icc=samples.srgb_profile())


def test_gearman_cli_resizes_a_real_jpeg(served: Served, portrait_jpeg: bytes) -> None:
    """`gearman -f resize < photo.jpg`: four portrait JPEG copies, orientation applied, none upscaled."""
    done = served.gearman(portrait_jpeg)
    assert done.returncode == 0, done.stderr
    # The CLI prints its "25% Complete" progress lines after the result; unpack_result ignores them.
    assert done.stdout.endswith(b"100% Complete\n")
    copies = unpack_result(done.stdout)
    assert [(c.size, c.width, c.height) for c in copies] == [
        (2048, 1200, 1600),
        (1024, 768, 1024),
        (512, 384, 512),
        (256, 192, 256),
    ]
    for c in copies:
        with Image.open(io.BytesIO(c.data)) as image:
            assert (image.format, image.size) == ("JPEG", (c.width, c.height))
            assert image.info.get("icc_profile") == samples.srgb_profile()
            rgb = image.convert("RGB")
            pixel = rgb.getpixel((rgb.width - 3, 3))
            assert isinstance(pixel, tuple)
            red, green, blue = pixel
            assert red > 200 and green < 60 and blue < 60, "the stored top-left mark is now top-right"


BAD_INPUTS = {
    "not-an-image": lambda jpg: b"GIF? no: just some text",
    "truncated": samples.truncated,
    "bomb": lambda jpg: samples.png_bomb(),
    "oversize": lambda jpg: b"\xff\xd8" + os.urandom(MAX_UPLOAD),
    "outside-roots": lambda jpg: json.dumps({"source": "/etc/hostname", "output_dir": "/tmp"}).encode(),
    "dotdot": lambda jpg: b'{"source": "/x/../etc/hostname", "output_dir": "/tmp"}',
}


@pytest.mark.parametrize("name", list(BAD_INPUTS))
def test_bad_input_fails_the_job_and_the_next_job_succeeds(served: Served, portrait_jpeg: bytes, name: str) -> None:
    """Each bad input is a failed job with an ImageError message; the same pool process then resizes fine."""
    failed = served.gearman(BAD_INPUTS[name](portrait_jpeg))
    assert failed.returncode != 0
    assert b"ImageError: " in failed.stdout + failed.stderr
    ok = served.gearman(pack_request(portrait_jpeg, sizes=[100]))
    assert ok.returncode == 0, ok.stderr
    assert [(c.width, c.height) for c in unpack_result(ok.stdout)] == [(75, 100)]
    assert served.worker.poll() is None


def test_file_mode_through_the_worker(served: Served, portrait_jpeg: bytes) -> None:
    """A JSON job naming files on shared storage writes the copies there and answers with their paths."""
    source = served.storage / "in" / "holiday.jpg"
    source.parent.mkdir(exist_ok=True)
    source.write_bytes(portrait_jpeg)
    job = {"source": str(source), "output_dir": str(served.storage / "out"), "sizes": [640, 64], "format": "webp"}
    done = served.gearman(b"", "-s", json.dumps(job))
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.split(b"\n")[0])  # progress lines follow the JSON
    assert [Path(c["path"]).name for c in answer["copies"]] == ["holiday-640.webp", "holiday-64.webp"]
    with Image.open(answer["copies"][0]["path"]) as image:
        assert (image.format, image.size) == ("WEBP", (480, 640))


async def test_progress_arrives_once_per_copy_before_the_result(served: Served, portrait_jpeg: bytes) -> None:
    """Through gearworker's Client: WORK_STATUS 1/3, 2/3, 3/3, then the result with three copies."""
    seen: list[Progress] = []
    async with Client([served.gearmand.address]) as client:
        result = await client.submit(
            "resize", pack_request(portrait_jpeg, sizes=[300, 200, 100]), timeout=60, on_progress=seen.append
        )
    assert [(p.kind, p.numerator, p.denominator) for p in seen] == [("status", i, 3) for i in (1, 2, 3)]
    assert [c.size for c in unpack_result(result)] == [300, 200, 100]
