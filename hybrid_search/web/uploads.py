"""Adding photos sent by a client: all files checked first, so a bad one adds nothing.

Each file is read up to the max_upload_bytes limit and decoded before any is stored; only
when every file is a readable photo under the limit are they handed to `add_upload`, which
stores each one atomically.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from werkzeug.datastructures import FileStorage

from ..annotations import Annotations
from ..collection import Collection
from ..decode import decode_image
from ..exceptions import ImageDecodeError
from ..ingest import add_upload, safe_filename
from ..storage import ImageRecord
from .errors import human_bytes

__all__ = ["Upload", "UploadRejected", "check_uploads", "file_label", "read_file",
           "store_uploads", "upload_endpoint"]

F = TypeVar("F", bound=Callable[..., Any])


def upload_endpoint(view: F) -> F:
    """Mark a view whose request may carry many photos: its body limit is raised to
    max_files_per_upload photos (see app._before_request)."""
    view.many_uploads = True  # type: ignore[attr-defined]
    return view


@dataclass(frozen=True)
class Upload:
    """One file sent by a client, with the annotations it should get."""

    name: str
    data: bytes
    annotations: Annotations = Annotations()


@dataclass(frozen=True)
class Added:
    """What happened to one upload: its record and whether it was new."""

    record: ImageRecord
    created: bool


class UploadRejected(Exception):
    """Some files cannot be added; nothing was stored. `status` is 400 or 413."""

    def __init__(self, status: int, problems: list[str]) -> None:
        self.status = status
        self.problems = problems
        what = "photo" if len(problems) == 1 else "photos"
        super().__init__(f"Nothing was added; {len(problems)} {what} cannot be: "
                         + "; ".join(problems))


def file_label(name: str) -> str:
    """A client's file name as it may be shown: the last path component, printable characters
    only (no NUL, newline or bidi override), at most 200 characters; as `add_upload` stores it."""
    return safe_filename(name)


def read_file(storage: FileStorage, limit: int) -> bytes:
    """The bytes of an uploaded file, read no further than one byte past `limit`."""
    return storage.stream.read(limit + 1)


def check_uploads(collection: Collection, uploads: list[Upload]) -> None:
    """Raise UploadRejected unless every upload is a readable photo within the size limit."""
    limit = int(collection.settings.max_upload_bytes)
    too_big = [f"{file_label(u.name)} is over the limit of {human_bytes(limit)} per photo "
               "(setting max_upload_bytes)" for u in uploads if len(u.data) > limit]
    if too_big:
        raise UploadRejected(413, too_big)
    problems = []
    for upload in uploads:
        try:
            decode_image(upload.data, name=file_label(upload.name),
                         max_pixels=collection.settings.max_image_pixels)
        except ImageDecodeError as e:
            problems.append(f"{e.name}: {e.reason}")
    if problems:
        raise UploadRejected(400, problems)


def store_uploads(collection: Collection, uploads: list[Upload]) -> list[Added]:
    """Check, then store every upload; returns what happened to each, in order."""
    check_uploads(collection, uploads)
    added = []
    for upload in uploads:
        image_id, created = add_upload(collection, upload.data, upload.name,
                                       upload.annotations or None)
        added.append(Added(collection.get(image_id), created))
    return added
