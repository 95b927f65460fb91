"""Query photos uploaded on the search page, kept for a while so a search can be paged.

The search form posts the photo once; it is checked, stored as
`<data_dir>/queries/<sha256>.img` with a small preview `<sha256>.jpg`, and the page's URL
carries `q_image=<sha256>` from then on: paging, moving the slider or changing the fusion
method re-reads the bytes by that key (and embeds them again, some tens of milliseconds)
instead of asking for the upload again. A file is dropped `ttl_s` seconds after its last
use; at most `max_files` are kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import threading
import time
from pathlib import Path

from ..decode import decode_image, make_thumbnail
from ..exceptions import QueryError
from .thumbs import atomic_write, jpeg_bytes

__all__ = ["QUERIES_DIR", "QueryImages"]

QUERIES_DIR = "queries"
PREVIEW_SIZE = 240
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class QueryImages:
    """Short-lived query photos in one folder, keyed by the SHA-256 of their bytes."""

    def __init__(self, root: Path, ttl_s: float, max_pixels: int, max_files: int = 500) -> None:
        self.dir = root / QUERIES_DIR
        self.ttl_s = ttl_s
        self.max_pixels = max_pixels
        self.max_files = max_files
        self._lock = threading.Lock()

    def _path(self, key: str, suffix: str) -> Path:
        if not _SHA256.fullmatch(key or ""):
            raise QueryError("q_image must be the 64-character key of a query photo")
        return self.dir / f"{key}{suffix}"

    def put(self, data: bytes, name: str) -> str:
        """Check that `data` is a photo, keep it, and return its key (ImageDecodeError if not)."""
        decoded = decode_image(data, name=name, max_pixels=self.max_pixels)
        key = hashlib.sha256(data).hexdigest()
        self.dir.mkdir(parents=True, exist_ok=True)
        target = self._path(key, ".img")
        preview = self._path(key, ".jpg")
        with self._lock:
            if not preview.is_file():
                atomic_write(preview, jpeg_bytes(make_thumbnail(decoded.image, PREVIEW_SIZE)))
            if not target.is_file():
                atomic_write(target, data)
            _touch(target, preview)
            self.prune()
        return key

    def get(self, key: str) -> bytes:
        """The bytes kept under `key`; QueryError once they have expired."""
        path = self._path(key, ".img")
        try:
            data = path.read_bytes()
        except OSError:
            raise QueryError(
                "the query photo is no longer on the server (query photos are kept for "
                f"{int(self.ttl_s // 60)} minutes after their last use); choose it again"
            ) from None
        _touch(path, self._path(key, ".jpg"))
        return data

    def preview(self, key: str) -> Path | None:
        """The preview JPEG of a kept query photo, if it is still there."""
        path = self._path(key, ".jpg")
        return path if path.is_file() else None

    def prune(self) -> None:
        """Delete expired files, then the oldest beyond `max_files` photos."""
        if not self.dir.is_dir():
            return
        now = time.time()
        kept: list[tuple[float, Path]] = []
        for path in self.dir.iterdir():
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            if now - mtime > self.ttl_s:
                path.unlink(missing_ok=True)
            elif path.suffix == ".img":
                kept.append((mtime, path))
        kept.sort()
        for _, path in kept[: max(0, len(kept) - self.max_files)]:
            path.unlink(missing_ok=True)
            path.with_suffix(".jpg").unlink(missing_ok=True)


def _touch(*paths: Path) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.utime(path)
