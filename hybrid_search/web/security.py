"""Request hardening: CSRF tokens, the sign-in rate limit, security headers, cookie flags."""

from __future__ import annotations

import hmac
import re
import secrets
import threading
import time
from collections import deque
from typing import Any

from flask import Flask, Request, Response, current_app, has_request_context, request, session
from flask.json.provider import DefaultJSONProvider
from flask.sessions import SecureCookieSessionInterface

__all__ = [
    "CSRF_FIELD",
    "CSRF_HEADER",
    "HtmlSafeJSONProvider",
    "RateLimiter",
    "SessionInterface",
    "add_security_headers",
    "csrf_token",
    "csrf_valid",
]

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_SESSION_KEY = "csrf"

# Self only. Inline scripts and styles are refused too; blob: lets the page preview a photo
# that is chosen or dropped before it is sent.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

# Outside strings JSON has no <, > or &, so escaping every one keeps the JSON equal.
_MARKUP = re.compile("[<>&]")


def csrf_token() -> str:
    """This session's CSRF token, made on first use."""
    token = session.get(_SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(32)
        session[_SESSION_KEY] = token
    return token


def csrf_valid(req: Request) -> bool:
    """Whether the request carries this session's CSRF token (form field or header)."""
    expected = session.get(_SESSION_KEY)
    given = req.headers.get(CSRF_HEADER) or req.form.get(CSRF_FIELD) or ""
    return isinstance(expected, str) and bool(expected) and hmac.compare_digest(
        expected.encode(), given.encode("utf-8", "replace")
    )


def new_csrf_token() -> str:
    """Replace the session's CSRF token (after signing in or out)."""
    session.pop(_SESSION_KEY, None)
    return csrf_token()


class RateLimiter:
    """At most `attempts` failures per key within `window_s` seconds, kept in memory."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> deque[float]:
        times = self._failures.setdefault(key, deque())
        while times and times[0] <= now - self.window_s:
            times.popleft()
        return times

    def retry_after(self, key: str) -> int:
        """Seconds until `key` may try again; 0 if it may now."""
        now = time.monotonic()
        with self._lock:
            times = self._recent(key, now)
            if len(times) < self.attempts:
                if not times:
                    self._failures.pop(key, None)
                return 0
            return max(1, int(times[0] + self.window_s - now + 0.999))

    def fail(self, key: str) -> None:
        """Count one failure."""
        now = time.monotonic()
        with self._lock:
            self._recent(key, now).append(now)
            if len(self._failures) > 10_000:  # forget the stalest keys; memory stays bounded
                for stale in sorted(self._failures, key=lambda k: self._failures[k][-1]
                                    if self._failures[k] else 0)[:5_000]:
                    del self._failures[stale]

    def reset(self, key: str) -> None:
        """Forget the failures of `key` (after a success)."""
        with self._lock:
            self._failures.pop(key, None)


class HtmlSafeJSONProvider(DefaultJSONProvider):
    """JSON with keys in the order built and `<`, `>`, `&` written as `\\u003c`-style escapes:
    a body that echoes stored words never holds markup, even for a client that sniffs."""

    sort_keys = False

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return _MARKUP.sub(lambda m: f"\\u{ord(m.group()):04x}", super().dumps(obj, **kwargs))


class SessionInterface(SecureCookieSessionInterface):
    """Signed-cookie sessions whose Secure flag can follow the request's scheme."""

    def get_cookie_secure(self, app: Flask) -> bool:
        mode = app.config.get("COOKIE_SECURE", "auto")
        if mode == "always":
            return True
        if mode == "never":
            return False
        return has_request_context() and request.is_secure


def add_security_headers(response: Response) -> Response:
    """Headers every response carries."""
    response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if current_app.config.get("REQUIRE_LOGIN"):
        response.headers.setdefault("Cache-Control", "private, no-cache")
    return response
