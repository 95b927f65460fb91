"""Errors as responses: JSON `{"error": ...}` for the API, an explained HTML page otherwise.

`/api/` paths, and clients that accept JSON but not HTML, get JSON (as microblog decides).
Core exceptions map to statuses here, at the edge: NotFoundError 404; QueryError,
ImageDecodeError and AnnotationError 400 (an image over max_upload_bytes 413);
ModelUnavailableError 503. Anything else is a 500 whose details go to the log, never to
the client (they could hold server paths).
"""

from __future__ import annotations

from flask import Flask, Response, current_app, jsonify, render_template, request
from werkzeug.exceptions import HTTPException, InternalServerError

from ..exceptions import (
    AnnotationError,
    HybridSearchError,
    ImageDecodeError,
    ModelUnavailableError,
    NotFoundError,
    QueryError,
)

__all__ = ["error_response", "human_bytes", "register_error_handlers", "status_of", "wants_json"]

TITLES: dict[int, str] = {
    400: "That request could not be understood",
    401: "Please sign in",
    403: "Not allowed",
    404: "Not found",
    405: "Not allowed here",
    413: "Too large",
    429: "Too many attempts",
    500: "Something went wrong",
    503: "Temporarily unavailable",
}

MESSAGES: dict[int, str] = {
    400: "The request was malformed.",
    401: "Sign in to do this.",
    403: "You are not allowed to do this.",
    404: "There is nothing at this address. It may have been deleted, or the link is wrong.",
    405: "This address does not accept that kind of request.",
    429: "Too many requests; wait a little and try again.",
    500: "The server could not finish this request. The details are in the server log.",
    503: "The server cannot do this right now. Try again later.",
}


def human_bytes(n: int) -> str:
    """A byte count for people: '50 MB', '512 KB'."""
    for unit, size in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.0f} {unit}" if value >= 10 or value.is_integer() else \
                f"{value:.1f} {unit}"
    return f"{n} bytes"


def too_large_message() -> str:
    """What a 413 says."""
    limit = int(current_app.config["MAX_UPLOAD_BYTES"])
    return (f"The upload is too large: each photo may be at most {human_bytes(limit)} "
            "(setting max_upload_bytes).")


def wants_json() -> bool:
    """Whether the client should get errors as JSON."""
    if request.path.startswith("/api/") or request.path == "/api":
        return True
    accept = request.accept_mimetypes
    return accept.accept_json and not accept.accept_html


def error_response(
    status: int, message: str | None = None, headers: dict[str, str] | None = None
) -> Response:
    """An error as JSON or as an HTML page, with `status`."""
    if message is None and status == 413:
        message = too_large_message()
    text = message or MESSAGES.get(status, "The request failed.")
    if wants_json():
        response = jsonify({"error": text, "status": status})
    else:
        response = current_app.make_response(render_template(
            "errors/error.html", status=status, title=TITLES.get(status, "Error"), message=text,
        ))
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def status_of(error: HybridSearchError) -> int:
    """The HTTP status of a core error."""
    if isinstance(error, ImageDecodeError) and "max_upload_bytes" in error.reason:
        return 413
    if isinstance(error, NotFoundError):
        return 404
    if isinstance(error, QueryError | ImageDecodeError | AnnotationError):
        return 400
    if isinstance(error, ModelUnavailableError):
        return 503
    return 500


def _http_error(error: HTTPException) -> Response | HTTPException:
    if error.code is None or error.code < 400:  # routing redirects
        return error
    headers: dict[str, str] = {}
    original = error.get_response()
    for name in ("Allow", "Retry-After", "WWW-Authenticate"):
        if name in original.headers:
            headers[name] = original.headers[name]
    if error.code == 413:
        return error_response(413, too_large_message(), headers)
    description = error.description
    default = type(error).description
    # Werkzeug's stock descriptions are written for developers; ours replace them.
    message = description if description and description != default else None
    if error.code == 500:
        message = None
    return error_response(error.code, message, headers)


def _core_error(error: HybridSearchError) -> Response:
    status = status_of(error)
    if status >= 500:
        current_app.logger.error("request failed: %s", error, exc_info=error)
        if isinstance(error, ModelUnavailableError):
            return error_response(503, "Image search is unavailable: the image model cannot "
                                       "be loaded on the server.")
        return error_response(500)
    if status == 413:
        return error_response(413, too_large_message())
    if isinstance(error, ImageDecodeError):
        return error_response(status, f"{error.name}: {_sentence(error.reason)}")
    return error_response(status, _sentence(str(error)))


def _internal_error(error: InternalServerError) -> Response:
    original = getattr(error, "original_exception", None)
    if isinstance(original, HybridSearchError):
        return _core_error(original)
    return error_response(500)


def _sentence(text: str) -> str:
    """A message with a capital first letter and a full stop."""
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text[-1] in ".!?" else text + "."


def register_error_handlers(app: Flask) -> None:
    """Install the handlers on an app."""
    app.register_error_handler(HybridSearchError, _core_error)
    app.register_error_handler(InternalServerError, _internal_error)
    app.register_error_handler(HTTPException, _http_error)
