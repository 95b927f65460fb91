"""Thumbnails made once and cached in the data directory, and the files they come from.

A thumbnail lives at `<data_dir>/thumbs/<sha[:2]>/<sha>_<size>.jpg`, named by the content
hash, so a changed image never shows an old thumbnail and `Collection.remove` finds it to
delete it. It is written to a temporary file and renamed into place: two requests racing to
make the same one both succeed, and no reader sees half a file.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

from PIL import Image

from ..collection import THUMBS_DIR, Collection
from ..decode import decode_image, make_thumbnail
from ..exceptions import NotFoundError
from ..storage import ImageRecord

__all__ = [
    "MIMETYPES",
    "OriginalMissingError",
    "atomic_write",
    "ensure_thumbnail",
    "jpeg_bytes",
    "original_file",
    "thumbnail_path",
]

MIMETYPES: dict[str, str] = {
    "JPEG": "image/jpeg",
    "PNG": "image/png",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
}


class OriginalMissingError(NotFoundError):
    """The database knows the image, but its file is no longer on disk."""

    def __init__(self, record: ImageRecord) -> None:
        super().__init__(
            f"the file of photo {record.id} ({record.filename}) is missing from disk: it was "
            "moved or deleted after it was added. Add it again, or delete this entry."
        )


def atomic_write(path: Path, data: bytes) -> None:
    """Write via a temporary file and a rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def jpeg_bytes(image: Image.Image, quality: int = 85) -> bytes:
    """An RGB picture encoded as JPEG."""
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()


def original_file(record: ImageRecord) -> Path:
    """The image's file on disk; OriginalMissingError if it is gone."""
    path = Path(record.path)
    if not record.path or not path.is_file():
        raise OriginalMissingError(record)
    return path


def thumbnail_path(root: Path, sha256: str, size: int) -> Path:
    """Where the thumbnail of given content and size is cached."""
    return root / THUMBS_DIR / sha256[:2] / f"{sha256}_{size}.jpg"


def ensure_thumbnail(collection: Collection, record: ImageRecord, size: int) -> Path:
    """The cached thumbnail of an image, made now if it is not there yet."""
    path = thumbnail_path(collection.root, record.sha256, size)
    if path.is_file():
        return path
    source = original_file(record)
    try:
        data = source.read_bytes()
    except OSError:
        raise OriginalMissingError(record) from None
    # The label is the file name, never the server path: it may reach the client.
    decoded = decode_image(data, name=record.filename,
                           max_pixels=collection.settings.max_image_pixels)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, jpeg_bytes(make_thumbnail(decoded.image, size)))
    return path
