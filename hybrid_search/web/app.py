"""The Flask app factory: one open collection per app, blueprints, hooks and error pages.

    flask --app hybrid_search.web.app:create_app run      (development)
    hybrid-search serve                                    (waitress; see server.py)
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, g, request
from werkzeug.exceptions import Forbidden
from werkzeug.routing import IntegerConverter

from ..collection import Collection
from ..settings import Settings, load_settings
from . import api, auth, images, pages
from .accounts import Accounts
from .auth import gate_reads, load_user
from .config import resolve_options
from .errors import human_bytes, register_error_handlers
from .highlight import highlight, matched_first
from .inputs import MAX_ID
from .present import image_urls
from .queries import QueryImages
from .security import (
    HtmlSafeJSONProvider,
    RateLimiter,
    SessionInterface,
    add_security_headers,
    csrf_token,
    csrf_valid,
)
from .state import COLLECTION_KEY, STATE_KEY, WebState

__all__ = ["TEMPLATES_DIR", "create_app"]

TEMPLATES_DIR = Path(__file__).resolve().parent.parent.parent / "templates"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
FORM_OVERHEAD = 1 << 20  # room for the other fields of a multipart body


class ImageIdConverter(IntegerConverter):
    """A positive image id that fits SQLite's integer; anything else is a 404."""

    def __init__(self, url_map: Any) -> None:
        super().__init__(url_map, min=1, max=MAX_ID)


def create_app(
    test_config: Mapping[str, Any] | None = None, settings: Settings | None = None
) -> Flask:
    """Make the app over the collection that `settings` (default: load_settings()) names.

    `test_config` overrides Flask config keys and web options (upper-case names, see
    config.py); web options are also read from `HYBRID_WEB_<NAME>` environment variables.
    """
    settings = settings if settings is not None else load_settings()
    app = Flask(__name__, template_folder=str(TEMPLATES_DIR), static_folder="static")
    options = resolve_options(settings, os.environ, test_config)
    app.config.update(options)
    max_upload = int(settings.max_upload_bytes)
    app.config.update(
        MAX_UPLOAD_BYTES=max_upload,
        # A query photo may come base64-encoded in JSON: a third larger than its bytes.
        MAX_CONTENT_LENGTH=max_upload * 4 // 3 + FORM_OVERHEAD,
        SESSION_COOKIE_NAME="hybrid_search_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=dt.timedelta(days=options["SESSION_DAYS"]),
    )
    if test_config is not None:
        app.config.update({k: v for k, v in test_config.items() if k not in options})
    app.session_interface = SessionInterface()
    app.json = HtmlSafeJSONProvider(app)  # "results" first, as built; no raw markup

    collection = Collection(settings)
    try:
        accounts = Accounts(collection.root)
        app.secret_key = options["SECRET_KEY"] or accounts.secret_key()
        generated = accounts.ensure_admin(options["ADMIN_PASSWORD"])
    except BaseException:
        collection.close()
        raise
    if generated is not None:
        print(f"hybrid-search: first run, the admin password is: {generated}\n"
              "  (shown once; it is stored hashed in the data directory. Set the setting "
              "admin_password, e.g. HYBRID_SEARCH_ADMIN_PASSWORD, to choose your own.)",
              file=sys.stderr, flush=True)
    app.extensions[COLLECTION_KEY] = collection
    app.extensions[STATE_KEY] = WebState(
        accounts=accounts,
        queries=QueryImages(collection.root, options["QUERY_IMAGE_TTL_S"],
                            int(settings.max_image_pixels)),
        login_limiter=RateLimiter(options["LOGIN_ATTEMPTS"], options["LOGIN_WINDOW_S"]),
    )

    app.url_map.converters["imageid"] = ImageIdConverter
    app.register_blueprint(pages.bp)
    app.register_blueprint(images.bp)
    app.register_blueprint(auth.bp)
    app.register_blueprint(api.bp)
    register_error_handlers(app)
    app.before_request(_before_request)
    app.after_request(add_security_headers)
    app.add_template_global(csrf_token)
    app.add_template_global(image_urls)
    app.add_template_global(human_bytes)
    app.add_template_global(pages.page_url_for)
    app.add_template_filter(highlight)
    app.add_template_filter(matched_first)
    app.context_processor(_template_context)
    return app


def _before_request() -> Any:
    """Body limit, who is asking, the require_login gate, then CSRF on every form."""
    view = current_app.view_functions.get(request.endpoint or "")
    if getattr(view, "many_uploads", False) and not request.is_json:
        per_file = int(current_app.config["MAX_UPLOAD_BYTES"])
        request.max_content_length = (
            per_file * int(current_app.config["MAX_FILES_PER_UPLOAD"]) + FORM_OVERHEAD
        )
    load_user()
    gated = gate_reads()
    if gated is not None:
        return gated
    if request.method in UNSAFE_METHODS and not request.path.startswith("/api/") \
            and not csrf_valid(request):
        raise Forbidden("This form has expired or did not come from this site. Reload the "
                        "page and try again.")
    return None


def _template_context() -> dict[str, Any]:
    collection: Collection = current_app.extensions[COLLECTION_KEY]
    return {
        "current_user": g.get("user"),
        "settings": collection.settings,
        "require_login": current_app.config["REQUIRE_LOGIN"],
    }
