"""The one place the web app speaks the ``resize`` job's wire format.

Two modes (setting ``web_photo_mode``):

- ``bytes``: the photo travels in the job (``pack_request``); the copies come
  back in the result (``unpack_result``) and the web app writes them to its
  storage root.  Works with workers anywhere.
- ``file``: the job names the original on the shared storage root and the
  photo's folder as ``output_dir``; the worker reads and writes the files
  itself (its ``storage_roots`` must include the web app's storage root) and
  answers with their names.  Neither the photo nor the copies pass through
  gearmand or the web app's memory.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..client import Client
from .photos import CopyFile, Photo
from .storage import PhotoStore

FUNCTION = "resize"
#: File-mode copies are named ``<stem>-<size>.<ext>`` by the worker.
_STEM = "copy"


class ResizeAnswerError(Exception):
    """The worker's answer is not what the ``resize`` job promises."""


async def resize_photo(
    client: Client,
    store: PhotoStore,
    photo: Photo,
    image: bytes | None,
    *,
    mode: str,
    timeout: float,
    on_progress: Callable[[Any], None],
) -> list[CopyFile]:
    """Run the ``resize`` job for ``photo`` and return its copies, written under the store's root."""
    if mode == "file":
        return await _file_mode(client, store, photo, timeout=timeout, on_progress=on_progress)
    from ..resize import pack_request, unpack_result

    if image is None:
        image = await asyncio.to_thread(store.original(photo).read_bytes)
    result = await client.submit(
        FUNCTION, pack_request(image, format=photo.format), timeout=timeout, on_progress=on_progress
    )
    del image  # the original is on disk: don't hold it while the copies are written
    copies = []
    for c in unpack_result(bytes(result)):
        stored = CopyFile(c.size, c.width, c.height, c.format, len(c.data), f"{_STEM}-{c.size}.{c.extension}")
        await asyncio.to_thread(store.write_copy, photo, stored.file, c.data)
        copies.append(stored)
    return copies


async def _file_mode(
    client: Client, store: PhotoStore, photo: Photo, *, timeout: float, on_progress: Callable[[Any], None]
) -> list[CopyFile]:
    folder = store.folder(photo)
    job = {"source": str(store.original(photo)), "output_dir": str(folder), "name": _STEM, "format": photo.format}
    result = await client.submit(FUNCTION, json.dumps(job).encode(), timeout=timeout, on_progress=on_progress)
    try:
        answer = json.loads(bytes(result))
        copies = []
        for c in answer["copies"]:
            path = Path(c["path"])
            if path.parent != folder:  # only ever serve files from the photo's own folder
                raise ResizeAnswerError(f"the worker wrote a copy outside the photo's folder: {path}")
            copies.append(
                CopyFile(
                    int(c["size"]), int(c["width"]), int(c["height"]), str(c["format"]), int(c["bytes"]), path.name
                )
            )
    except (ValueError, KeyError, TypeError) as e:
        raise ResizeAnswerError(f"the worker's answer is not a resize result: {e}") from e
    return copies
