"""Image bytes by id: the original file, its cached thumbnail, and query-photo previews.

URLs made by `present.image_urls` carry `v=<sha256[:12]>`; a request whose `v` matches the
content may be cached for a year (ids can be reused after a delete, content hashes cannot).
"""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, request, send_file

from ..storage import ImageRecord
from .state import get_collection, web_state
from .thumbs import MIMETYPES, ensure_thumbnail, original_file
from .uploads import file_label

__all__ = ["bp"]

bp = Blueprint("images", __name__)

YEAR = 365 * 24 * 3600


def _cache(response: Response, record: ImageRecord | None = None) -> Response:
    """Long caching for versioned URLs; private when reading needs a sign-in."""
    if record is not None and request.args.get("v") == record.sha256[:12]:
        response.cache_control.max_age = YEAR
        response.cache_control.immutable = True
    else:
        response.cache_control.max_age = 0
        response.cache_control.no_cache = True
    if current_app.config["REQUIRE_LOGIN"]:
        response.cache_control.public = False
        response.cache_control.private = True
    else:
        response.cache_control.public = True
    return response


@bp.get("/images/<imageid:image_id>/file")
def file(image_id: int) -> Response:
    """The original photo, as it was added."""
    record = get_collection().get(image_id)
    path = original_file(record)
    response = send_file(
        path,
        mimetype=MIMETYPES.get(record.format, "application/octet-stream"),
        # A file ingested from disk keeps its name, which may hold a newline: no header may.
        download_name=file_label(record.filename),
        conditional=True,
        etag=record.sha256,
        max_age=0,
    )
    return _cache(response, record)


@bp.get("/images/<imageid:image_id>/thumb")
def thumb(image_id: int) -> Response:
    """The photo's thumbnail (JPEG, longer side `thumbnail_size`), made once and cached."""
    collection = get_collection()
    record = collection.get(image_id)
    size = int(collection.settings.thumbnail_size)
    path = ensure_thumbnail(collection, record, size)
    response = send_file(path, mimetype="image/jpeg", conditional=True,
                         etag=f"{record.sha256}-{size}", max_age=0)
    return _cache(response, record)


@bp.get("/query-images/<key>")
def query_preview(key: str) -> Response:
    """A small preview of a query photo kept for the search page."""
    path = web_state().queries.preview(key)
    if path is None:
        abort(404, "That query photo is no longer kept on the server; choose it again.")
    response = send_file(path, mimetype="image/jpeg", conditional=True, max_age=0)
    response.cache_control.private = True
    return response
