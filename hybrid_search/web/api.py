"""The JSON API: the page's powers for programs.

    GET|POST /api/search          text, image (file, or base64 in JSON), like, alpha, fusion,
                                  normalization, limit, offset -> {"results": [...], ...}
    GET      /api/images          the newest photos (limit, offset)
    POST     /api/images          add photos (multipart `images`/`image` files with title,
                                  description, tags; or JSON, base64)           [write]
    GET      /api/images/<id>     one photo
    PATCH    /api/images/<id>     change title, description, tags, add_tags, remove_tags [write]
    DELETE   /api/images/<id>     delete a photo                                [write]

Writes need `Authorization: Bearer <token>` or a signed-in session with `X-CSRF-Token`
(401 without credentials, 403 with bad ones). Errors are `{"error": "..."}`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flask import Blueprint, abort, current_app, jsonify, request
from werkzeug.datastructures import FileStorage

from ..annotations import Annotations
from ..exceptions import QueryError
from ..search import MAX_LIMIT, MAX_OFFSET, SearchRequest, search
from .auth import api_write_required
from .errors import error_response
from .inputs import (
    MAX_ID,
    annotation_change,
    decode_base64_image,
    optional_float,
    optional_id,
    optional_int,
    optional_text,
)
from .present import hit_json, record_json
from .state import get_collection
from .uploads import (
    Upload,
    UploadRejected,
    file_label,
    read_file,
    store_uploads,
    upload_endpoint,
)

__all__ = ["bp"]

bp = Blueprint("api", __name__, url_prefix="/api")

SEARCH_FIELDS = frozenset({"text", "image", "image_name", "like", "alpha", "fusion",
                           "normalization", "limit", "offset"})
UPLOAD_FIELDS = frozenset({"image", "filename", "title", "description", "tags"})


def _json_body() -> dict[str, Any]:
    """The request's JSON object; 400 for invalid JSON or another JSON type."""
    data = request.get_json(silent=True)
    if data is None:
        abort(400, "The body is not valid JSON.")
    if not isinstance(data, dict):
        abort(400, f"The body must be a JSON object, not {type(data).__name__}.")
    return data


def _fields() -> tuple[Mapping[str, Any], Mapping[str, FileStorage], bool]:
    """Fields and files of the request: JSON, a form, or the query string; and whether JSON."""
    if request.is_json:
        return _json_body(), {}, True
    if request.method == "GET":
        return request.args, {}, False
    return request.form, request.files, False


def _limit() -> int:
    return int(get_collection().settings.max_upload_bytes)


def _check_size(data: bytes) -> bytes:
    if len(data) > _limit():
        abort(413)
    return data


def _refuse_unknown(data: Mapping[str, Any], allowed: frozenset[str]) -> None:
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise QueryError("unknown field(s): " + ", ".join(unknown))


@bp.route("/search", methods=["GET", "POST"])
def search_api() -> Any:
    """Search by words, a photo, a stored photo (`like`), or words and a photo."""
    data, files, is_json = _fields()
    if is_json:
        _refuse_unknown(data, SEARCH_FIELDS)
    text = optional_text(data.get("text"), "text")
    image_name = optional_text(data.get("image_name"), "image_name", 200) or "query image"
    image_bytes = None
    if files.get("image") is not None:
        image_bytes = _check_size(read_file(files["image"], _limit()))
        image_name = file_label(files["image"].filename or image_name)
        if not image_bytes:
            raise QueryError("the image file is empty")
    elif data.get("image") not in (None, ""):
        image_bytes = _check_size(decode_base64_image(data.get("image")))
    like = optional_id(data.get("like"), "like")
    if like is not None and image_bytes is not None:
        raise QueryError("give either an image or like (an image id), not both")
    fusion = optional_text(data.get("fusion"), "fusion", 20)
    normalization = optional_text(data.get("normalization"), "normalization", 20)
    response = search(get_collection(), SearchRequest(
        text=text,
        image_bytes=image_bytes,
        image_name=image_name,
        image_id=like,
        alpha=optional_float(data.get("alpha"), "alpha"),
        fusion=fusion,
        normalization=normalization,
        limit=optional_int(data.get("limit"), "limit", 1, MAX_LIMIT),
        offset=optional_int(data.get("offset"), "offset", 0, MAX_OFFSET) or 0,
    ))
    body = response.to_dict()
    body["results"] = [hit_json(h) for h in response.hits]
    return jsonify(body)


@bp.get("/images")
def list_images() -> Any:
    """The newest photos first."""
    collection = get_collection()
    limit = optional_int(request.args.get("limit"), "limit", 1, MAX_LIMIT) or int(
        collection.settings.limit)
    offset = optional_int(request.args.get("offset"), "offset", 0, MAX_ID) or 0
    ids = sorted(collection.store.all_ids(), reverse=True)
    records = collection.store.get_many(ids[offset : offset + limit])
    return jsonify({"images": [record_json(r) for r in records], "total": len(ids),
                    "offset": offset, "limit": limit})


def _json_uploads(data: dict[str, Any]) -> list[Upload]:
    """Uploads from JSON: one object with `image`, or `images`: a list of such objects."""
    if "images" in data:
        if set(data) != {"images"}:
            raise QueryError("give either images (a list) or one image's fields, not both")
        items = data["images"]
        if not isinstance(items, list):
            raise QueryError("images must be a list of objects")
    else:
        items = [data]
    uploads = []
    for n, item in enumerate(items, start=1):
        if not isinstance(item, dict):
            raise QueryError(f"images[{n}] must be an object")
        _refuse_unknown(item, UPLOAD_FIELDS)
        if item.get("image") in (None, ""):
            raise QueryError(f"image {n} has no image (base64)")
        name = optional_text(item.get("filename"), "filename", 200) or f"upload-{n}"
        change = annotation_change({k: item[k] for k in ("title", "description", "tags")
                                    if k in item}, allow_tag_edits=False)
        uploads.append(Upload(name, decode_base64_image(item["image"], f"image {n}"),
                              change.as_annotations()))
    return uploads


def _form_uploads() -> list[Upload]:
    files = [f for f in request.files.getlist("images") + request.files.getlist("image")
             if f.filename or f.content_length]
    change = annotation_change({k: request.form[k] for k in ("title", "description", "tags")
                                if k in request.form}, allow_tag_edits=False)
    annotations = Annotations(change.title or "", change.description or "", change.tags or ())
    return [Upload(f.filename or "upload", read_file(f, _limit()), annotations) for f in files]


@bp.post("/images")
@upload_endpoint
@api_write_required
def add_images() -> Any:
    """Add photos; 201 if any is new, 200 if all were already there."""
    uploads = _json_uploads(_json_body()) if request.is_json else _form_uploads()
    if not uploads:
        raise QueryError("no photo given: send files in the field images (or image)")
    max_files = int(current_app.config["MAX_FILES_PER_UPLOAD"])
    if len(uploads) > max_files:
        raise QueryError(f"at most {max_files} photos per request, not {len(uploads)}")
    try:
        added = store_uploads(get_collection(), uploads)
    except UploadRejected as e:
        return error_response(e.status, str(e))
    body = {"images": [record_json(a.record) | {"created": a.created} for a in added]}
    return jsonify(body), 201 if any(a.created for a in added) else 200


@bp.get("/images/<imageid:image_id>")
def get_image(image_id: int) -> Any:
    """One photo's fields and URLs."""
    return jsonify(record_json(get_collection().get(image_id)))


@bp.patch("/images/<imageid:image_id>")
@api_write_required
def patch_image(image_id: int) -> Any:
    """Change annotations; fields left out stay as they are. Re-indexed at once."""
    if request.is_json:
        data: Mapping[str, Any] = _json_body()
        change = annotation_change(data, strict=True)
    else:
        data = request.form
        change = annotation_change(
            {k: data[k] for k in ("title", "description", "tags", "add_tags", "remove_tags")
             if k in data})
    if not data:
        raise QueryError("nothing to change: give title, description, tags, add_tags or "
                         "remove_tags")
    collection = get_collection()
    record = collection.annotate(
        image_id, title=change.title, description=change.description, tags=change.tags,
        add_tags=change.add_tags, remove_tags=change.remove_tags,
    )
    return jsonify(record_json(record))


@bp.delete("/images/<imageid:image_id>")
@api_write_required
def delete_image(image_id: int) -> Any:
    """Delete a photo everywhere."""
    collection = get_collection()
    collection.get(image_id)
    collection.remove([image_id])
    return jsonify({"deleted": image_id})
