"""Security: who may write, CSRF, forged sessions, path traversal, how files are served, the
headers every response carries, the sign-in rate limit, and escaping of stored words.

tests/test_web.py covers each mechanism once; these tests sweep every route that writes and
every kind of response, so a route added later without its guard fails here.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from conftest import ADMIN_PASSWORD, csrf_token, live_server
from flask import Flask
from flask.sessions import SecureCookieSessionInterface
from flask.testing import FlaskClient
from PIL import Image

pytestmark = pytest.mark.model

UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}
# Every route that accepts an unsafe method, by what it does.
WRITES = {"pages.edit", "pages.delete", "pages.upload", "auth.create_token",
          "auth.revoke_token", "auth.change_password", "api.add_images", "api.patch_image",
          "api.delete_image"}
NOT_WRITES = {"pages.search_post", "auth.login", "auth.logout", "api.search_api"}
# What no response may ever contain: files outside the served folders.
SECRETS = (b"root:x:0:0", b"[build-system]", b"SQLite format 3", b"password_hash")


def png(color: tuple[int, int, int] = (10, 200, 10)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (24, 16), color).save(buf, "PNG")
    return buf.getvalue()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def state(app: Flask) -> tuple[Any, ...]:
    """Everything a write could change: records, index, stored files, tokens, password."""
    collection = app.extensions["hybrid_search"]
    root = collection.root
    records = tuple((r.id, r.title, r.description, r.tags) for r in
                    collection.store.get_many(sorted(collection.store.all_ids())))
    files = tuple(sorted(str(p.relative_to(root)) for p in (root / "originals").rglob("*")))
    web = root / "web"
    return (records, frozenset(collection.text.ids()), files,
            (web / "tokens.json").read_bytes() if (web / "tokens.json").exists() else b"",
            (web / "admin.json").read_bytes())


def form_writes(app: Flask) -> list[tuple[str, dict[str, Any]]]:
    """A request to every form route that writes: (path, form fields without the token)."""
    token_id = app.extensions["hybrid_search.web"].accounts.create_token("victim")[1].id
    return [
        ("/images/1/edit", {"title": "Hacked", "description": "", "tags": ""}),
        ("/images/2/delete", {}),
        ("/upload", {"images": (io.BytesIO(png()), "new.png")}),
        ("/admin/tokens", {"name": "attacker"}),
        (f"/admin/tokens/{token_id}/revoke", {}),
        ("/admin/password", {"current": ADMIN_PASSWORD, "new": "attacker password",
                             "confirm": "attacker password"}),
    ]


API_WRITES: list[tuple[str, str, dict[str, Any]]] = [
    ("post", "/api/images", {"data": {"images": (io.BytesIO(png()), "new.png")}}),
    ("post", "/api/images", {"json": {"image": "iVBORw0KGgo="}}),
    ("patch", "/api/images/1", {"json": {"title": "Hacked"}}),
    ("patch", "/api/images/1", {"data": {"title": "Hacked"}}),
    ("delete", "/api/images/2", {}),
]


def fresh(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Request arguments with new file streams (a stream is spent once sent)."""
    out = dict(kwargs)
    if "data" in out:
        out["data"] = {k: (io.BytesIO(v[0].getvalue()), v[1]) if isinstance(v, tuple) else v
                       for k, v in out["data"].items()}
    return out


def test_every_route_that_takes_an_unsafe_method_is_classified(app: Flask) -> None:
    unsafe = {rule.endpoint for rule in app.url_map.iter_rules() if rule.methods & UNSAFE}
    assert unsafe == WRITES | NOT_WRITES, "classify the new route and test its guard"


def test_writes_without_credentials_are_refused_and_change_nothing(
    app: Flask, client: FlaskClient
) -> None:
    writes = form_writes(app)
    before = state(app)
    token = csrf_token(client, "/")
    for path, data in writes:
        with_token = client.post(path, data=fresh({"data": {**data, "csrf_token": token}})["data"])
        assert with_token.status_code == 401, path
        without = client.post(path, data=fresh({"data": data})["data"])
        assert without.status_code == 403, path
    for method, path, kwargs in API_WRITES:
        response = getattr(client, method)(path, **fresh(kwargs))
        assert response.status_code == 401, (method, path)
        assert response.json["error"] and "Bearer" in response.headers["WWW-Authenticate"]
        for header in ("Bearer nope", "Bearer hs_0000_forged", "Basic YWRtaW46YWRtaW4=",
                       "Bearer", "bearer  ", "Token x"):
            refused = getattr(client, method)(path, headers={"Authorization": header},
                                              **fresh(kwargs))
            assert refused.status_code == 403, (method, path, header)
    assert state(app) == before


def test_an_api_token_opens_the_api_but_not_the_pages(app: Flask, client: FlaskClient,
                                                      api_token: str) -> None:
    writes = form_writes(app)
    before = state(app)
    token = csrf_token(client, "/")
    for path, data in writes:
        response = client.post(path, headers=bearer(api_token),
                               data=fresh({"data": {**data, "csrf_token": token}})["data"])
        assert response.status_code == 401, path
    assert state(app) == before


def test_csrf_missing_or_wrong_is_refused_for_a_signed_in_admin(
    app: Flask, admin_client: FlaskClient
) -> None:
    writes = form_writes(app)
    before = state(app)
    stranger = app.test_client()
    theirs = csrf_token(stranger, "/")  # a valid token, of another session
    mine = csrf_token(admin_client, "/")
    for path, data in writes:
        for token in (None, "", "wrong", theirs, mine + "x", mine[:-1]):
            fields = fresh({"data": data})["data"]
            if token is not None:
                fields["csrf_token"] = token
            response = admin_client.post(path, data=fields)
            assert response.status_code == 403, (path, token)
            assert "did not come from this site" in response.get_data(as_text=True)
    for method, path, kwargs in API_WRITES:
        for headers in ({}, {"X-CSRF-Token": "wrong"}, {"X-CSRF-Token": theirs}):
            response = getattr(admin_client, method)(path, headers=headers, **fresh(kwargs))
            assert response.status_code == 403, (method, path, headers)
            assert "CSRF" in response.json["error"]
    # Nor does a simple cross-site request (text/plain) carrying JSON.
    sneaky = admin_client.patch("/api/images/1", data=json.dumps({"title": "Hacked"}),
                                content_type="text/plain")
    assert sneaky.status_code == 403
    assert state(app) == before
    ok = admin_client.patch("/api/images/1", json={"title": "Fine"},
                            headers={"X-CSRF-Token": mine})
    assert ok.status_code == 200


def test_sign_in_and_search_forms_need_the_csrf_token_too(client: FlaskClient) -> None:
    for path, data in (("/login", {"password": ADMIN_PASSWORD}), ("/search", {"q": "cat"}),
                       ("/logout", {})):
        assert client.post(path, data=data).status_code == 403, path
        assert client.post(path, data={**data, "csrf_token": "x"}).status_code == 403, path


def test_a_session_cookie_signed_with_another_key_is_ignored(app: Flask,
                                                             client: FlaskClient) -> None:
    fingerprint = app.extensions["hybrid_search.web"].accounts.password_fingerprint()
    forged = {"user": "admin", "auth": fingerprint, "csrf": "chosen-token"}
    before = state(app)

    def cookie_for(key: str) -> str:
        signer = Flask("forger")
        signer.secret_key = key
        serializer = SecureCookieSessionInterface().get_signing_serializer(signer)
        assert serializer is not None
        return str(serializer.dumps(forged))

    for key in ("wrong key", "test secret key ", "test secret ke"):
        client.set_cookie("hybrid_search_session", cookie_for(key))
        response = client.delete("/api/images/1", headers={"X-CSRF-Token": "chosen-token"})
        assert response.status_code == 401, key
        assert "Sign out" not in client.get("/").get_data(as_text=True)
    assert state(app) == before
    # The same cookie signed with the app's key is a sign-in: the forgery above was faithful.
    client.set_cookie("hybrid_search_session", cookie_for(str(app.secret_key)))
    assert client.delete("/api/images/1",
                         headers={"X-CSRF-Token": "chosen-token"}).status_code == 200


def test_unsafe_methods_cannot_be_smuggled(app: Flask, client: FlaskClient,
                                           api_token: str) -> None:
    before = state(app)
    for path in ("/images/1/delete", "/images/1/edit", "/admin/tokens", "/admin/password"):
        assert client.get(path).status_code == 405, path
    for header in ("X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"):
        response = client.post("/api/images/1", headers={header: "DELETE", **bearer(api_token)})
        assert response.status_code == 405
    assert client.open("/api/images/1", method="OPTIONS").status_code == 200
    assert state(app) == before


TRAVERSALS = [
    "/images/..%2f..%2fetc%2fpasswd/file",
    "/images/1%2f..%2f..%2f..%2f..%2fetc%2fpasswd/file",
    "/images/1/file/../../../../etc/passwd",
    "/images/-1/file",
    "/images/0x1/file",
    "/images/1.0/file",
    "/images/%31/file/..%2f..%2fhybrid-search.db",
    "/images/1/thumb/..%2f..%2f..%2fpyproject.toml",
    "/static/../../../pyproject.toml",
    "/static/..%2f..%2f..%2fpyproject.toml",
    "/static/%2e%2e/%2e%2e/%2e%2e/pyproject.toml",
    "/static/%2e%2e%2f%2e%2e%2f%2e%2e%2fpyproject.toml",
    "/static/....//....//....//pyproject.toml",
    "/static//etc/passwd",
    "/static/%2fetc%2fpasswd",
    "/static/..\\..\\..\\pyproject.toml",
    "/static/%c0%ae%c0%ae/%c0%ae%c0%ae/pyproject.toml",
    "/static/style.css%00.txt",
    "/query-images/..",
    "/query-images/..%2f..%2fhybrid-search.db",
    "/query-images/%2e%2e%2f%2e%2e%2fweb%2fadmin.json",
    "/query-images/" + "A" * 64,
    "/query-images/" + "0" * 64,
    "/query-images/" + "0" * 63 + "%00",
    "/query-images/not-hex",
    "/?q_image=../../hybrid-search.db",
    "/?q_image=" + "0" * 64,
    "/api/search?like=../1",
    "/api/images/..%2f1",
]


def _no_secrets(status: int, body: bytes, path: str) -> None:
    assert status in (400, 404), (path, status, body[:200])
    for secret in SECRETS:
        assert secret not in body, (path, secret)


@pytest.mark.parametrize("path", TRAVERSALS)
def test_path_traversal_never_reaches_a_file(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    if response.status_code == 308:  # werkzeug merges "//" and redirects, on this site
        location = urlsplit(response.headers["Location"])
        assert location.netloc in ("", "localhost") and location.path.startswith("/static/")
        response = client.get(location.path)
    _no_secrets(response.status_code, response.data, path)


def test_path_traversal_over_a_real_socket(app: Flask) -> None:
    """waitress, not the test client, decodes the raw request line: send it byte for byte.

    The targets exist: /etc/passwd, and the project's pyproject.toml three folders above
    `hybrid_search/web/static/`.
    """
    with live_server(app) as url:
        parts = urlsplit(url)
        for path in TRAVERSALS:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
            try:
                conn.putrequest("GET", path, skip_accept_encoding=True)
                conn.endheaders()
                response = conn.getresponse()
                body = response.read()
                if response.status == 308:
                    location = urlsplit(response.getheader("Location", ""))
                    assert location.netloc == parts.netloc, path
                    conn.request("GET", location.path)
                    response = conn.getresponse()
                    body = response.read()
                _no_secrets(response.status, body, path)
            finally:
                conn.close()


def test_images_are_served_by_id_with_their_type_and_nosniff(app: Flask,
                                                             client: FlaskClient) -> None:
    collection = app.extensions["hybrid_search"]
    types = {"PNG": "image/png", "JPEG": "image/jpeg"}
    for record in collection.store.iter_records():
        response = client.get(f"/images/{record.id}/file?path=/etc/passwd&filename=x.html")
        assert response.status_code == 200
        assert response.mimetype == types[record.format]
        assert hashlib.sha256(response.data).hexdigest() == record.sha256
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Content-Disposition"].startswith("inline")
        thumb = client.get(f"/images/{record.id}/thumb")
        assert thumb.mimetype == "image/jpeg" and thumb.data[:3] == b"\xff\xd8\xff"
    # Every URL the API hands out addresses an image by id, never by a path or a name.
    listing = client.get("/api/images?limit=100").json["images"]
    for item in listing:
        for key in ("image_url", "thumbnail_url", "page_url"):
            assert re.fullmatch(rf"/images/{item['id']}(/file|/thumb)?(\?v=[0-9a-f]{{12}})?",
                                item[key]), item[key]


def _responses(app: Flask, client: FlaskClient, admin: FlaskClient,
               token: str) -> dict[str, Any]:
    """One response of every kind the app gives: pages, API, files, redirects and errors."""
    limited = app.test_client()
    login = csrf_token(limited)
    for _ in range(5):
        limited.post("/login", data={"csrf_token": login, "password": "guess"},
                     environ_base={"REMOTE_ADDR": "10.9.9.9"})
    return {
        "page": client.get("/?q=cat"),
        "image page": client.get("/images/1"),
        "login": client.get("/login"),
        "static": client.get("/static/app.js"),
        "file": client.get("/images/1/file"),
        "thumb": client.get("/images/1/thumb"),
        "api search": client.post("/api/search", json={"text": "cat"}),
        "api image": client.get("/api/images/1"),
        "redirect": client.post("/search", data={"q": "cat", "csrf_token": csrf_token(client)}),
        "400 page": client.get("/?alpha=2&q=cat"),
        "400 api": client.post("/api/search", json={"text": "cat", "alpha": "x"}),
        "401": client.delete("/api/images/1"),
        "403": client.delete("/api/images/1", headers=bearer("wrong")),
        "403 csrf": client.post("/logout"),
        "404 page": client.get("/nope"),
        "404 api": client.get("/api/images/99999"),
        "405": client.put("/api/images/1"),
        "413": client.post("/api/search", data=b"x" * (app.config["MAX_CONTENT_LENGTH"] + 1),
                           content_type="application/octet-stream"),
        "429": limited.post("/login", data={"csrf_token": login, "password": "guess"},
                            environ_base={"REMOTE_ADDR": "10.9.9.9"}),
        "admin": admin.get("/admin"),
        "api write": client.patch("/api/images/1", json={"title": "T"}, headers=bearer(token)),
    }


def test_every_kind_of_response_carries_the_security_headers(
    app: Flask, client: FlaskClient, admin_client: FlaskClient, api_token: str
) -> None:
    responses = _responses(app, client, admin_client, api_token)
    statuses = {name: r.status_code for name, r in responses.items()}
    assert statuses["413"] == 413 and statuses["429"] == 429 and statuses["405"] == 405
    for name, response in responses.items():
        headers = response.headers
        csp = headers.get("Content-Security-Policy", "")
        for directive in ("default-src 'self'", "script-src 'self'", "object-src 'none'",
                          "base-uri 'none'", "form-action 'self'", "frame-ancestors 'none'"):
            assert directive in csp, (name, csp)
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp and "*" not in csp
        assert headers["X-Content-Type-Options"] == "nosniff", name
        assert headers["X-Frame-Options"] == "DENY", name
        assert "Access-Control-Allow-Origin" not in headers, name


def test_session_cookie_flags(client: FlaskClient) -> None:
    first = client.get("/login")  # the CSRF token starts a session
    cookies = first.headers.getlist("Set-Cookie")
    (cookie,) = [c for c in cookies if c.startswith("hybrid_search_session=")]
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "path"} <= flags and "domain" not in flags
    assert "SameSite=Lax" in cookie and "Path=/" in cookie
    token = csrf_token(client)
    signed_in = client.post("/login", data={"csrf_token": token, "password": ADMIN_PASSWORD})
    (cookie,) = [c for c in signed_in.headers.getlist("Set-Cookie")
                 if c.startswith("hybrid_search_session=")]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie
    # The cookie holds no secret in the clear: only the role and a digest of the hash.
    value = cookie.split(";")[0].split("=", 1)[1]
    assert ADMIN_PASSWORD.split()[0] not in value


def test_the_sixth_wrong_password_is_429_whatever_the_forwarded_for(
    make_app: Callable[..., Flask], data_dir: Path
) -> None:
    app = make_app(data_dir)  # the default: 5 failures per address in 300 s
    assert app.config["LOGIN_ATTEMPTS"] == 5
    client = app.test_client()
    token = csrf_token(client)
    for n in range(5):
        wrong = client.post("/login", data={"csrf_token": token, "password": f"guess {n}"},
                            headers={"X-Forwarded-For": f"203.0.113.{n}"})
        assert wrong.status_code == 401, n
    for password in ("guess 6", ADMIN_PASSWORD):
        sixth = client.post("/login", data={"csrf_token": token, "password": password},
                            headers={"X-Forwarded-For": "198.51.100.7",
                                     "X-Real-IP": "198.51.100.8"})
        assert sixth.status_code == 429
        assert 0 < int(sixth.headers["Retry-After"]) <= 300
    assert "Sign out" not in client.get("/").get_data(as_text=True)


def test_stored_markup_is_escaped_in_pages_and_json(app: Flask, admin_client: FlaskClient,
                                                    client: FlaskClient,
                                                    api_token: str) -> None:
    evil = '<script>alert("x")</script><img src=x onerror=alert(1)>&lt;b&gt; cat'
    response = client.patch("/api/images/1", headers=bearer(api_token),
                            json={"title": evil, "description": evil, "tags": [evil, "cat"]})
    assert response.status_code == 200 and response.json["title"] == evil
    json_bodies = {
        "patch": response.data,
        "image": client.get("/api/images/1").data,
        "list": client.get("/api/images?limit=100").data,
        "search": client.post("/api/search", json={"text": "cat"}).data,
        "error": client.post("/api/search", json={"text": "cat", "fusion": "<script>"}).data,
        "upload error": client.post("/api/images", headers=bearer(api_token),
                                    data={"images": (io.BytesIO(b"junk"), evil + ".png")}).data,
    }
    for name, body in json_bodies.items():
        assert b"<" not in body and b">" not in body, name
        assert b"\\u003cscript\\u003e" in body or b"\\u003cimg" in body, name
    assert json.loads(json_bodies["image"])["title"] == evil
    # Pages: the raw HTML holds the words only as text.
    sign_in_pages = {
        "image page": admin_client.get("/images/1?q=<script>alert(1)</script>"),
        "results": admin_client.get("/?q=cat"),
        "query echo": admin_client.get("/?q=%3Cscript%3Ealert(1)%3C/script%3E"),
        "upload error": admin_client.post("/upload", data={
            "csrf_token": csrf_token(admin_client, "/upload"),
            "images": (io.BytesIO(b"junk"), "<img src=x onerror=alert(1)>.png")}),
    }
    for name, page in sign_in_pages.items():
        html = page.get_data(as_text=True)
        assert "<script>alert" not in html and "<img src=x" not in html, name
        assert "&lt;script&gt;" in html or "&lt;img src=x" in html, name
        assert len(re.findall(r"<script\b", html)) == 1, name  # only the page's own app.js
