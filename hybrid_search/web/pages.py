"""The pages people use: search, an image's page, adding, editing and deleting photos.

The search form posts (it may carry a photo) and is answered with a redirect to a plain GET
URL (`/?q=…&alpha=…&fusion=…&q_image=…&like=…&page=…`), so results can be bookmarked,
paged and reloaded. A posted query photo is kept server-side (see `queries`), so the URL
needs only its key.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from typing import Any

from flask import (
    Blueprint,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)

from ..exceptions import AnnotationError, ImageDecodeError, NotFoundError, QueryError
from ..search import MAX_OFFSET, SearchRequest, SearchResponse, search
from ..storage import ImageRecord
from .auth import login_required
from .errors import error_response, status_of
from .highlight import query_terms
from .inputs import annotation_change, optional_float, optional_id, optional_int
from .present import hit_bars, scores_tooltip
from .state import get_collection, web_state
from .thumbs import original_file
from .uploads import (
    Upload,
    UploadRejected,
    file_label,
    read_file,
    store_uploads,
    upload_endpoint,
)

__all__ = ["bp"]

bp = Blueprint("pages", __name__)

NEIGHBOURS = 8
MAX_PAGE = 10_000


@dataclass(frozen=True)
class SearchForm:
    """What the search form and the results URL carry, as the client sent it."""

    q: str = ""
    alpha: str = ""
    fusion: str = ""
    page: str = ""
    q_image: str = ""
    like: str = ""

    @classmethod
    def from_values(cls, values: Any) -> SearchForm:
        """The form from request args or form fields."""
        return cls(**{f.name: str(values.get(f.name, "") or "").strip()[:1000]
                      for f in fields(cls)})

    @property
    def has_query(self) -> bool:
        """Whether there is anything to search for."""
        return bool(self.q or self.q_image or self.like)

    def url_args(self, **changes: str) -> dict[str, str]:
        """URL parameters for this form with some changed; empty and default ones left out."""
        values = {f.name: getattr(self, f.name) for f in fields(self)} | changes
        settings = get_collection().settings
        if _same_number(values.get("alpha", ""), settings.alpha):
            values["alpha"] = ""
        if values.get("fusion") == settings.fusion:
            values["fusion"] = ""
        if values.get("page") in ("1", 1):
            values["page"] = ""
        return {k: str(v) for k, v in values.items() if v not in ("", None)}


def page_url_for(form: SearchForm) -> Callable[[int], str]:
    """A function from a page number to the URL of that page of these results."""
    return lambda n: url_for("pages.index", **form.url_args(page=str(n)))


def _same_number(text: str, number: float) -> bool:
    try:
        return math.isclose(float(text), float(number))
    except ValueError:
        return False


@dataclass
class PageState:
    """Everything the search template shows."""

    form: SearchForm
    alpha: float
    fusion: str
    limit: int
    page: int = 1
    response: SearchResponse | None = None
    results: list[dict[str, Any]] | None = None
    browse: list[ImageRecord] | None = None
    total: int = 0
    like_record: ImageRecord | None = None
    suggestion: str | None = None
    corrected: str | None = None
    error: str | None = None

    @property
    def pages(self) -> int:
        """How many pages of results there are."""
        return max(1, math.ceil(self.total / self.limit))


def _defaults(form: SearchForm) -> PageState:
    settings = get_collection().settings
    try:
        alpha = optional_float(form.alpha, "alpha")
    except QueryError:
        alpha = None
    alpha = alpha if alpha is not None and 0.0 <= alpha <= 1.0 else float(settings.alpha)
    fusion = form.fusion if form.fusion in ("linear", "rrf") else str(settings.fusion)
    return PageState(form=form, alpha=alpha, fusion=fusion, limit=int(settings.limit))


def _page_number(form: SearchForm) -> int:
    return optional_int(form.page, "page", 1, MAX_PAGE) or 1


def _render_search(state: PageState, status: int = 200) -> tuple[str, int]:
    return render_template("pages/search.html", s=state), status


def _run_search(state: PageState) -> PageState:
    collection = get_collection()
    form = state.form
    state.page = _page_number(form)
    offset = (state.page - 1) * state.limit
    if offset > MAX_OFFSET:
        raise QueryError(f"page {state.page} is too far; at most {MAX_OFFSET // state.limit + 1}")
    like = optional_id(form.like, "like")
    image_bytes = web_state().queries.get(form.q_image) if form.q_image else None
    if like is not None and image_bytes is None:
        state.like_record = collection.get(like)
    response = search(collection, SearchRequest(
        text=form.q or None,
        image_bytes=image_bytes,
        image_name="query photo",
        image_id=like if image_bytes is None else None,
        alpha=optional_float(form.alpha, "alpha"),
        fusion=form.fusion or None,
        limit=state.limit,
        offset=offset,
    ))
    state.response = response
    state.total = response.total
    terms = query_terms(getattr(response, "corrected_query", None) or form.q)
    settings = collection.settings
    state.results = []
    for hit in response.hits:
        bars = hit_bars(hit, response, int(settings.rrf_k))
        state.results.append({
            "hit": hit,
            "record": hit.record,
            "terms": terms,
            "bars": bars,
            "tooltip": scores_tooltip(hit, response, str(settings.metric)),
        })
    # Spelling lives in the core: a suggestion when some words are unknown, or the corrected
    # query that was searched when the words as typed matched nothing.
    state.suggestion = getattr(response, "suggestion", None)
    state.corrected = getattr(response, "corrected_query", None)
    return state


def _recent(state: PageState) -> PageState:
    """The collection's newest photos, for the page without a query."""
    collection = get_collection()
    state.page = _page_number(state.form)
    ids = sorted(collection.store.all_ids(), reverse=True)
    state.total = len(ids)
    start = (state.page - 1) * state.limit
    state.browse = collection.store.get_many(ids[start : start + state.limit])
    return state


@bp.get("/")
def index() -> Any:
    """The search page: the newest photos without a query, results with one."""
    form = SearchForm.from_values(request.args)
    state = _defaults(form)
    try:
        return _render_search(_run_search(state) if form.has_query else _recent(state))
    except (QueryError, ImageDecodeError, NotFoundError) as e:
        state.error = _message(e)
        state.results = None
        return _render_search(state, status_of(e))


def _message(error: Exception) -> str:
    if isinstance(error, ImageDecodeError):
        return f"The photo {error.name} cannot be searched with: {error.reason}."
    text = str(error)
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


@bp.post("/search")
def search_post() -> Any:
    """Take the form (maybe with a photo) and redirect to the results' URL."""
    form = SearchForm.from_values(request.form)
    changes: dict[str, str] = {"page": ""}
    if request.form.get("clear_image"):
        changes.update(q_image="", like="")
    upload = request.files.get("image")
    if upload is not None and upload.filename:
        limit = int(get_collection().settings.max_upload_bytes)
        data = read_file(upload, limit)
        if len(data) > limit:
            return error_response(413)
        if data:
            try:
                changes["q_image"] = web_state().queries.put(data, file_label(upload.filename))
            except ImageDecodeError as e:
                state = _defaults(replace(form, q_image="", like=""))
                state.error = _message(e)
                return _render_search(state, 400)
            changes["like"] = ""
    args = form.url_args(**changes)
    if not ({"q", "q_image", "like"} & set(args)):
        flash("Type some words, or choose a photo, to search.", "info")
    return redirect(url_for("pages.index", **args), 303)


def _image_page(record: ImageRecord, status: int = 200, **context: Any) -> tuple[str, int]:
    collection = get_collection()
    neighbours: list[Any] = []
    note = None
    try:
        neighbours = search(collection, SearchRequest(image_id=record.id,
                                                      limit=NEIGHBOURS)).hits
    except NotFoundError:
        note = "This photo has no image vector yet, so similar photos cannot be found."
    try:
        original_file(record)
        missing = False
    except NotFoundError:
        missing = True
    q = request.args.get("q", "")[:1000]
    return render_template(
        "pages/image.html", record=record, neighbours=neighbours, note=note,
        missing=missing, terms=query_terms(q), q=q, **context,
    ), status


@bp.get("/images/<imageid:image_id>")
def image(image_id: int) -> Any:
    """One photo: full size, its words, its nearest neighbours; edit and delete for admins."""
    return _image_page(get_collection().get(image_id))


@bp.post("/images/<imageid:image_id>/edit")
@login_required
def edit(image_id: int) -> Any:
    """Save the title, description and tags, and re-index them at once."""
    collection = get_collection()
    record = collection.get(image_id)
    values = {k: request.form.get(k, "") for k in ("title", "description", "tags")}
    try:
        change = annotation_change(values, allow_tag_edits=False)
    except AnnotationError as e:
        return _image_page(record, 400, edit_error=_message(e), edit_values=values)
    collection.annotate(image_id, title=change.title, description=change.description,
                        tags=change.tags)
    flash("Saved. The photo can be found by its new words right away.", "success")
    return redirect(url_for("pages.image", image_id=image_id), 303)


@bp.post("/images/<imageid:image_id>/delete")
@login_required
def delete(image_id: int) -> Any:
    """Delete a photo, its thumbnails and its stored copy."""
    collection = get_collection()
    record = collection.get(image_id)
    collection.remove([image_id])
    flash(f"Deleted “{record.title or record.filename}”.", "success")
    return redirect(url_for("pages.index"), 303)


@bp.route("/upload", methods=["GET", "POST"])
@upload_endpoint
@login_required
def upload() -> Any:
    """Add one or many photos, with a title, description and tags for all of them."""
    values = {k: request.form.get(k, "") for k in ("title", "description", "tags")}
    if request.method == "GET":
        return render_template("pages/upload.html", values=values)
    collection = get_collection()
    files = [f for f in request.files.getlist("images") if f.filename]
    max_files = int(current_app.config["MAX_FILES_PER_UPLOAD"])
    problems: list[str] = []
    status = 400
    if not files:
        problems = ["Choose at least one photo."]
    elif len(files) > max_files:
        problems = [f"At most {max_files} photos at once; you chose {len(files)}."]
    try:
        change = annotation_change(values, allow_tag_edits=False)
    except AnnotationError as e:
        problems.append(_message(e))
    if not problems:
        limit = int(collection.settings.max_upload_bytes)
        uploads = [Upload(f.filename or "upload", read_file(f, limit),
                          change.as_annotations()) for f in files]
        try:
            added = store_uploads(collection, uploads)
        except UploadRejected as e:
            problems, status = e.problems, e.status
        else:
            new = [a for a in added if a.created]
            old = [a for a in added if not a.created]
            if new:
                flash(f"Added {len(new)} photo{'s' if len(new) != 1 else ''}.", "success")
            if old:
                names = ", ".join(a.record.title or a.record.filename for a in old[:3])
                flash(f"Already in the collection, left as they were: {names}"
                      + (f" and {len(old) - 3} more." if len(old) > 3 else "."), "info")
            if len(added) == 1:
                return redirect(url_for("pages.image", image_id=added[0].record.id), 303)
            return redirect(url_for("pages.index"), 303)
    return render_template("pages/upload.html", values=values, problems=problems), status
