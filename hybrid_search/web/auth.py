"""Signing in and out, the admin page (API tokens, password), and who may do what.

Pages: a signed-in session (the admin password). API: `Authorization: Bearer <token>`, or the
page's own session plus an `X-CSRF-Token` header. Reading is public unless `require_login`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import Forbidden, Unauthorized

from .security import csrf_valid, new_csrf_token
from .state import web_state

__all__ = [
    "api_identity",
    "api_write_required",
    "bp",
    "gate_reads",
    "load_user",
    "login_required",
    "safe_next",
]

bp = Blueprint("auth", __name__)

F = TypeVar("F", bound=Callable[..., Any])
MIN_PASSWORD = 8
PUBLIC_ENDPOINTS = frozenset({"auth.login", "static"})


def load_user() -> None:
    """Set `g.user` from the session; a session from before a password change is dropped."""
    g.user = None
    g.api_token = None
    if session.get("user") != "admin":
        return
    if session.get("auth") == web_state().accounts.password_fingerprint():
        g.user = "admin"
    else:
        session.pop("user", None)
        session.pop("auth", None)


def _unauthorized(message: str) -> Unauthorized:
    return Unauthorized(
        message, www_authenticate=WWWAuthenticate("bearer", {"realm": "hybrid-search"})
    )


def api_identity() -> str | None:
    """'token' or 'session' for an API caller with credentials, None without; 403 if bad."""
    header = request.headers.get("Authorization")
    if header is not None:
        scheme, _, credentials = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Forbidden("The Authorization header must be 'Bearer <token>'.")
        token = web_state().accounts.check_token(credentials.strip())
        if token is None:
            raise Forbidden("That API token is not valid (wrong, or revoked).")
        g.api_token = token
        return "token"
    if g.get("user"):
        return "session"
    return None


def api_write_required(view: F) -> F:
    """API writes: a valid bearer token, or a signed-in session with its CSRF token."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        who = api_identity()
        if who is None:
            raise _unauthorized("Sign in, or send 'Authorization: Bearer <token>' (tokens are "
                                "made on the admin page).")
        if who == "session" and not csrf_valid(request):
            abort(403, "Missing or wrong CSRF token: send the page's token in the "
                       "X-CSRF-Token header.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def login_required(view: F) -> F:
    """Pages that change the collection: a signed-in session."""

    @wraps(view)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if g.get("user") is None:
            if request.method in ("GET", "HEAD"):
                return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
            abort(401, "Sign in to change the collection.")
        return view(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


def gate_reads() -> Response | None:
    """With require_login, nothing but the sign-in page is public."""
    if not current_app.config["REQUIRE_LOGIN"] or g.get("user"):
        return None
    if request.endpoint is None or request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if request.path.startswith("/api/"):
        if api_identity() is None:
            raise _unauthorized("This collection is private: sign in, or send "
                                "'Authorization: Bearer <token>'.")
        return None
    if request.method in ("GET", "HEAD"):
        return redirect(url_for("auth.login", next=request.full_path.rstrip("?")))
    abort(401, "This collection is private: sign in first.")


def safe_next(value: str | None) -> str | None:
    """A local path to go to after signing in, or None for anything else."""
    if not value or not value.startswith("/") or value.startswith(("//", "/\\")):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 32 for c in value):
        return None
    return value


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    """The sign-in form."""
    next_url = safe_next(request.values.get("next"))
    if g.get("user") and request.method == "GET":
        return redirect(next_url or url_for("pages.index"))
    error = None
    status = 200
    headers: dict[str, str] = {}
    if request.method == "POST":
        state = web_state()
        client = request.remote_addr or "unknown"
        wait = state.login_limiter.retry_after(client)
        if wait:
            minutes = max(1, round(wait / 60))
            error = (f"Too many failed sign-ins from your address. Try again in "
                     f"{minutes} minute{'s' if minutes != 1 else ''}.")
            status = 429
            headers["Retry-After"] = str(wait)
        elif state.accounts.check_password(request.form.get("password", "")):
            state.login_limiter.reset(client)
            session.clear()
            session["user"] = "admin"
            session["auth"] = state.accounts.password_fingerprint()
            session.permanent = True
            new_csrf_token()
            flash("You are signed in.", "success")
            return redirect(next_url or url_for("pages.index"), 303)
        else:
            state.login_limiter.fail(client)
            error = "That password is not right. Try again."
            status = 401
    body = render_template("auth/login.html", error=error, next=next_url)
    return body, status, headers


@bp.post("/logout")
def logout() -> Response:
    """Sign out (a form with the CSRF token, never a link)."""
    session.clear()
    new_csrf_token()
    flash("You are signed out.", "success")
    return redirect(url_for("pages.index"), 303)


def _admin_page(status: int = 200, **context: Any) -> tuple[str, int]:
    accounts = web_state().accounts
    return render_template(
        "auth/admin.html",
        tokens=accounts.tokens(),
        password_configured=bool(current_app.config["ADMIN_PASSWORD"]),
        **context,
    ), status


@bp.get("/admin")
@login_required
def admin() -> Any:
    """API tokens and the admin password."""
    return _admin_page()


@bp.post("/admin/tokens")
@login_required
def create_token() -> Any:
    """Make an API token and show it, once."""
    name = request.form.get("name", "")
    secret, record = web_state().accounts.create_token(name)
    return _admin_page(201, new_token=secret, new_token_name=record.name)


@bp.post("/admin/tokens/<token_id>/revoke")
@login_required
def revoke_token(token_id: str) -> Any:
    """Delete an API token."""
    if not web_state().accounts.revoke_token(token_id):
        abort(404, "There is no API token with that id.")
    flash("The token was revoked; clients using it can no longer write.", "success")
    return redirect(url_for("auth.admin"), 303)


@bp.post("/admin/password")
@login_required
def change_password() -> Any:
    """Replace the admin password (unless the admin_password setting fixes it)."""
    accounts = web_state().accounts
    if current_app.config["ADMIN_PASSWORD"]:
        return _admin_page(400, password_error="The password is set by the admin_password "
                                               "setting; change it there.")
    current = request.form.get("current", "")
    new = request.form.get("new", "")
    if not accounts.check_password(current):
        return _admin_page(400, password_error="The current password is not right.")
    if len(new) < MIN_PASSWORD:
        return _admin_page(400, password_error=f"The new password needs at least "
                                               f"{MIN_PASSWORD} characters.")
    if new != request.form.get("confirm", ""):
        return _admin_page(400, password_error="The two new passwords differ.")
    accounts.set_password(new)
    session["auth"] = accounts.password_fingerprint()
    flash("Password changed. Other signed-in browsers are signed out.", "success")
    return redirect(url_for("auth.admin"), 303)
