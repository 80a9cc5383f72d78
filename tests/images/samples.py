"""Test images made at run time (nothing binary is committed).

``photo()`` is photo-like on purpose: smooth gradients, fine noise and hard
edges, so that a bad filter or a wrong orientation shows in the numbers.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib

import numpy as np
from PIL import Image, ImageCms, ImageDraw

MARK = (255, 0, 0)  # a red block in the stored image's top-left corner: tells where "up" went


def photo(width: int = 1200, height: int = 900, seed: int = 1) -> Image.Image:
    """An RGB photo-like image with a red marker in its top-left corner."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 200 + 30, y / height * 200 + 30, (x + y) / (width + height) * 120 + 60], -1)
    texture = 25 * np.sin(x / 7.0)[..., None] * np.cos(y / 11.0)[..., None]
    pixels = base + texture + rng.normal(0, 6, (height, width, 3)).astype(np.float32)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for i in range(12):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        r = int(rng.integers(width // 40, width // 8))
        fill = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if i % 2 else draw.rectangle)((cx - r, cy - r, cx + r, cy + r), fill=fill)
    draw.rectangle((0, 0, width // 6, height // 6), fill=MARK)
    return image


@functools.cache  # the profile header holds its creation time: make it once so copies compare equal
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def jpeg(image: Image.Image, *, orientation: int | None = None, icc: bytes | None = None, quality: int = 90) -> bytes:
    """JPEG bytes, optionally with an EXIF orientation tag and an ICC profile."""
    kwargs: dict[str, object] = {"quality": quality}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    if icc is not None:
        kwargs["icc_profile"] = icc
    return encode(image, "JPEG", **kwargs)


def encode(image: Image.Image, fmt: str, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, fmt, **kwargs)
    return buf.getvalue()


def rgba_png(width: int = 400, height: int = 300) -> bytes:
    """A PNG whose left half is fully transparent and right half opaque blue."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((width // 2, 0, width, height), fill=(0, 0, 255, 255))
    return encode(image, "PNG")


def animated_gif(width: int = 300, height: int = 200) -> bytes:
    """Two frames: the first all green, the second all red (only the first may be used)."""
    frames = [Image.new("RGB", (width, height), c) for c in ((0, 200, 0), (200, 0, 0))]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    return buf.getvalue()


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_bomb(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit PNG of ``width`` x ``height`` black pixels: tens of KB that decode to hundreds of MB."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


SVG = b'<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100"><rect width="100" height="100"/></svg>'
