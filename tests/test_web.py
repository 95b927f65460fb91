"""Tests of the web app through Flask's test client: every route, its errors, and who may write."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import stat
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import ADMIN_PASSWORD, csrf_token, settings_for, sign_in
from flask import Flask
from flask.testing import FlaskClient
from PIL import Image

from hybrid_search.demo import PHOTOS_DIR

pytestmark = pytest.mark.model

CARD_RE = re.compile(r'class="card-title"><a href="/images/(\d+)')


# -- helpers -------------------------------------------------------------------------------
def image_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (64, 48),
                fmt: str = "PNG") -> bytes:
    """A small generated photo."""
    buf = io.BytesIO()
    im = Image.new("RGB", size, color)
    for x in range(0, size[0], 8):  # some structure, so it is no flat colour
        for y in range(size[1]):
            im.putpixel((x, y), (color[2], color[0], color[1]))
    im.save(buf, fmt)
    return buf.getvalue()


def crop(name: str) -> bytes:
    """A JPEG near-duplicate of a demo photo: a query that is not the stored file."""
    with Image.open(PHOTOS_DIR / name) as im:
        w, h = im.size
        small = im.convert("RGB").crop((w // 10, h // 10, w - w // 10, h - h // 10))
        small = small.resize((small.width // 2, small.height // 2))
        buf = io.BytesIO()
        small.save(buf, "JPEG", quality=85)
        return buf.getvalue()


def ids(app: Flask) -> dict[str, int]:
    """Image ids by file name."""
    store = app.extensions["hybrid_search"].store
    return {r.filename: r.id for r in store.iter_records()}


def count(app: Flask) -> int:
    return int(app.extensions["hybrid_search"].store.count())


def result_ids(html: str) -> list[int]:
    """Ids of the result cards on a page, in order."""
    return [int(i) for i in CARD_RE.findall(html)]


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def no_server_paths(body: str, app: Flask) -> None:
    """Neither the photo folder nor the data directory appears in a response."""
    assert str(PHOTOS_DIR) not in body
    assert str(app.extensions["hybrid_search"].root) not in body
    assert '"path"' not in body


def originals(app: Flask) -> list[Path]:
    root = app.extensions["hybrid_search"].root / "originals"
    return [p for p in root.rglob("*") if p.is_file()] if root.is_dir() else []


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def keyword_ids(client: FlaskClient, words: str) -> list[int]:
    """Ids of the results whose own words match (the keyword signal), best first.

    Other signals (meaning, zero-shot) rank every photo; the keyword signal says which
    photos' annotations hold the words.
    """
    response = client.get("/api/search", query_string={"text": words, "limit": 100})
    return [r["id"] for r in response.json["results"] if r["signals"].get("text") is not None]


# -- the search page -----------------------------------------------------------------------
def test_home_page_shows_the_newest_photos(client: FlaskClient, app: Flask) -> None:
    response = client.get("/")
    assert response.status_code == 200
    html = text(response)
    assert "Newest photos" in html and "12 photos in the collection" in html
    assert len(result_ids(html)) == 10  # the `limit` setting
    assert "Page 1 of 2" in html
    assert 'type="range"' in html and 'name="fusion"' in html and 'type="file"' in html
    no_server_paths(html, app)


def test_home_page_of_an_empty_collection_says_what_to_do(make_app: Callable[..., Flask],
                                                          tmp_path: Path) -> None:
    app = make_app(tmp_path / "empty", ADMIN_PASSWORD="an admin password")
    html = text(app.test_client().get("/"))
    assert "No photos yet" in html and "hybrid-search demo" in html


def test_words_find_the_annotated_photo_first_with_the_words_marked(
    client: FlaskClient, app: Flask
) -> None:
    by_name = ids(app)
    html = text(client.get("/?q=cat"))
    assert result_ids(html)[0] == by_name["cat.png"]
    assert "<mark>cat</mark>" in html  # title and tags
    assert re.search(r"\d+ results? for “cat”", html)
    # Stems are marked too: "cups" finds and marks "cup".
    html = text(client.get("/?q=coffee+cups"))
    assert result_ids(html)[0] == by_name["coffee.png"]
    assert "<mark>cup</mark>" in html
    assert result_ids(text(client.get("/?q=rocket")))[0] == by_name["rocket.jpg"]


def test_each_result_has_score_bars_with_raw_scores_in_a_tooltip(client: FlaskClient) -> None:
    html = text(client.get("/?q=texture&like=1"))
    card = html[html.index('<li class="card">'):]
    card = card[: card.index("</li>\n")]
    assert card.count("<meter") == 3  # words, looks, overall
    assert re.search(r'<meter min="0" max="1" value="[01]\.\d{3}"', card)
    tooltip = re.search(r'class="scores" title="([^"]+)"', card)
    assert tooltip and "words (BM25F)" in tooltip.group(1) and "looks (cosine)" in tooltip.group(1)
    assert "More like this" in card


def test_results_are_paged_and_pages_keep_the_query(client: FlaskClient, app: Flask) -> None:
    cat = ids(app)["cat.png"]
    first = text(client.get(f"/?like={cat}"))
    assert "11 results" in first and "Page 1 of 2" in first
    assert len(result_ids(first)) == 10 and cat not in result_ids(first)
    next_link = re.search(r'rel="next" href="([^"]+)"', first)
    assert next_link is not None
    href = next_link.group(1).replace("&amp;", "&")
    assert f"like={cat}" in href and "page=2" in href
    second = text(client.get(href))
    assert len(result_ids(second)) == 1 and "Page 2 of 2" in second
    assert not set(result_ids(first)) & set(result_ids(second))
    far = text(client.get(f"/?like={cat}&page=9"))
    assert "No more results" in far


def test_did_you_mean_offers_the_collections_own_words(client: FlaskClient) -> None:
    # Some words match: the others get a suggestion.
    html = text(client.get("/?q=rocket+laucnh"))
    assert "Did you mean" in html and 'href="/?q=rocket+launch"' in html
    # No word matches: the corrected words are searched, and the page says so.
    html = text(client.get("/?q=rockt"))
    assert "No photo matched “rockt”; showing results for" in html
    assert 'href="/?q=rocket"' in html and "<mark>rocket</mark>" in html
    assert "Did you mean" not in text(client.get("/?q=rocket"))


@pytest.mark.parametrize(("query", "status", "words"), [
    ("q=cat&alpha=abc", 400, "Alpha must be a number"),
    ("q=cat&alpha=1.5", 400, "alpha must be between 0 and 1"),
    ("q=cat&alpha=nan", 400, "finite number"),
    ("q=cat&fusion=magic", 400, "fusion must be"),
    ("q=cat&page=0", 400, "Page must be from 1"),
    ("q=cat&page=two", 400, "Page must be a whole number"),
    ("like=abc", 400, "Like must be a whole number"),
    ("like=99999", 404, "No image with id 99999"),
    ("q_image=../../etc/passwd", 400, "64-character key"),
    ("q_image=" + "0" * 64, 400, "no longer on the server"),
])
def test_bad_search_parameters_are_explained_on_the_page(
    client: FlaskClient, query: str, status: int, words: str
) -> None:
    response = client.get("/?" + query)
    assert response.status_code == status
    html = text(response)
    assert "That search did not work." in html
    assert words.lower() in html.lower()
    assert 'id="search-form"' in html  # the form is still there to try again


def test_a_posted_photo_is_kept_and_survives_paging_and_the_slider(
    client: FlaskClient, app: Flask
) -> None:
    token = csrf_token(client, "/")
    response = client.post("/search", data={
        "csrf_token": token, "q": "", "alpha": "0.5", "fusion": "linear",
        "image": (io.BytesIO(crop("coffee.png")), "my coffee.jpg"),
    })
    assert response.status_code == 303
    location = response.headers["Location"]
    key = re.search(r"q_image=([0-9a-f]{64})", location)
    assert key is not None
    kept = app.extensions["hybrid_search"].root / "queries" / f"{key.group(1)}.img"
    assert kept.is_file() and kept.read_bytes() == crop("coffee.png")
    html = text(client.get(location))
    assert result_ids(html)[0] == ids(app)["coffee.png"]
    assert f'name="q_image" value="{key.group(1)}"' in html  # the form carries it on
    assert "Your photo" in html
    page_two = re.search(r'rel="next" href="([^"]+)"', html)
    assert page_two is not None and key.group(1) in page_two.group(1)
    moved = client.get(f"/?q_image={key.group(1)}&alpha=0.9&fusion=rrf")
    assert moved.status_code == 200 and result_ids(text(moved))[0] == ids(app)["coffee.png"]
    preview = client.get(f"/query-images/{key.group(1)}")
    assert preview.status_code == 200 and preview.mimetype == "image/jpeg"
    assert client.get("/query-images/" + "0" * 64).status_code == 404
    assert client.get("/query-images/../../web/admin.json").status_code in (400, 404)


def test_words_and_a_photo_together(client: FlaskClient, app: Flask) -> None:
    response = client.post("/search", data={
        "csrf_token": csrf_token(client, "/"), "q": "texture",
        "image": (io.BytesIO(crop("gravel.png")), "gravel.jpg"),
    })
    html = text(client.get(response.headers["Location"]))
    assert result_ids(html)[0] == ids(app)["gravel.png"]
    assert "for “texture” and your photo" in html
    assert "<mark>texture</mark>" in html


def test_a_posted_non_image_is_refused_in_words_and_not_kept(
    client: FlaskClient, app: Flask
) -> None:
    response = client.post("/search", data={
        "csrf_token": csrf_token(client, "/"), "q": "cat",
        "image": (io.BytesIO(b"just some text, no photo"), "notes.txt"),
    })
    assert response.status_code == 400
    html = text(response)
    assert "notes.txt" in html and "not an image" in html
    assert 'value="cat"' in html  # the words stay in the box
    queries = app.extensions["hybrid_search"].root / "queries"
    assert not queries.exists() or not list(queries.glob("*.img"))


def test_the_search_form_needs_its_csrf_token(client: FlaskClient) -> None:
    response = client.post("/search", data={"q": "cat"})
    assert response.status_code == 403
    assert "Reload the page" in text(response)


def test_removing_the_query_photo_and_an_empty_search(client: FlaskClient) -> None:
    token = csrf_token(client, "/")
    response = client.post("/search", data={"csrf_token": token, "q": "cat", "like": "3",
                                             "clear_image": "1"})
    assert response.headers["Location"] == "/?q=cat"
    response = client.post("/search", data={"csrf_token": token, "q": "  "})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert "Type some words, or choose a photo" in text(client.get("/"))


def test_a_posted_photo_over_the_limit_is_413(make_app: Callable[..., Flask],
                                              data_dir: Path) -> None:
    app = make_app(data_dir, settings={"max_upload_bytes": 20 * 1024})
    client = app.test_client()
    big = image_bytes(size=(400, 400), fmt="BMP")  # 480 KB
    response = client.post("/search", data={"csrf_token": csrf_token(client, "/"),
                                             "image": (io.BytesIO(big), "big.bmp")})
    assert response.status_code == 413
    assert "at most 20 KB" in text(response)


# -- the image page and image files --------------------------------------------------------
def test_the_image_page_shows_the_photo_its_words_and_neighbours(
    client: FlaskClient, app: Flask
) -> None:
    cat = ids(app)["cat.png"]
    response = client.get(f"/images/{cat}?q=tabby")
    assert response.status_code == 200
    html = text(response)
    assert "Close-up of a <mark>tabby</mark> cat" in html
    assert "Chelsea" in html and "green eyes" in html
    assert f'src="/images/{cat}/file' in html
    assert "Similar photos" in html and len(result_ids(html)) == 8
    assert cat not in result_ids(html)
    assert "Sign in</a> to edit or delete" in html and "Delete this photo" not in html
    no_server_paths(html, app)


@pytest.mark.parametrize("path", ["/images/99999", "/images/0", "/images/-1",
                                  "/images/99999999999999999999999", "/images/abc"])
def test_unknown_images_are_404_pages(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 404
    assert response.mimetype == "text/html" and "Not found" in text(response)


def test_files_and_thumbnails_are_served_by_id_with_their_type(
    client: FlaskClient, app: Flask
) -> None:
    collection = app.extensions["hybrid_search"]
    cat = collection.get(ids(app)["cat.png"])
    original = client.get(f"/images/{cat.id}/file")
    assert original.status_code == 200 and original.mimetype == "image/png"
    assert original.data == (PHOTOS_DIR / "cat.png").read_bytes()
    assert 'filename=cat.png' in original.headers["Content-Disposition"]
    rocket = ids(app)["rocket.jpg"]
    assert client.get(f"/images/{rocket}/file").mimetype == "image/jpeg"

    thumb = client.get(f"/images/{cat.id}/thumb?v={cat.sha256[:12]}")
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert "max-age=31536000" in thumb.headers["Cache-Control"]
    cached = collection.root / "thumbs" / cat.sha256[:2] / f"{cat.sha256}_320.jpg"
    assert cached.is_file() and cached.read_bytes() == thumb.data
    with Image.open(cached) as im:
        assert max(im.size) == 320
    made = cached.stat().st_mtime_ns
    again = client.get(f"/images/{cat.id}/thumb", headers={"If-None-Match": f'"{cat.sha256}-320"'})
    assert again.status_code == 304
    assert cached.stat().st_mtime_ns == made
    assert "no-cache" in client.get(f"/images/{cat.id}/thumb?v=stale").headers["Cache-Control"]
    assert not list(cached.parent.glob(".*.tmp"))


def test_a_missing_original_is_a_clear_404(admin_client: FlaskClient, app: Flask,
                                           api_token: str) -> None:
    response = admin_client.post("/api/images", headers=bearer(api_token),
                                 data={"images": (io.BytesIO(image_bytes()), "red.png")})
    image_id = response.json["images"][0]["id"]
    (stored,) = originals(app)
    stored.unlink()
    response = admin_client.get(f"/images/{image_id}/file")
    assert response.status_code == 404
    assert "red.png" in text(response) and "missing from disk" in text(response)
    assert admin_client.get(f"/images/{image_id}/thumb").status_code == 404
    as_json = admin_client.get(f"/images/{image_id}/file",
                               headers={"Accept": "application/json"})
    assert as_json.status_code == 404 and "missing from disk" in as_json.json["error"]
    page = admin_client.get(f"/images/{image_id}")
    assert page.status_code == 200 and "The photo file is missing" in text(page)
    no_server_paths(text(page), app)


# -- signing in ----------------------------------------------------------------------------
def test_sign_in_and_out(client: FlaskClient) -> None:
    token = csrf_token(client)
    wrong = client.post("/login", data={"csrf_token": token, "password": "nope"})
    assert wrong.status_code == 401 and "That password is not right" in text(wrong)
    right = client.post("/login", data={"csrf_token": token, "password": ADMIN_PASSWORD,
                                        "next": "/upload"})
    assert right.status_code == 303 and right.headers["Location"] == "/upload"
    cookie = right.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    html = text(client.get("/"))
    assert "Sign out" in html and "Add photos" in html
    # Signing in made a new CSRF token: the old one no longer works.
    assert client.post("/logout", data={"csrf_token": token}).status_code == 403
    out = client.post("/logout", data={"csrf_token": csrf_token(client, "/")})
    assert out.status_code == 303
    assert "Sign in" in text(client.get("/")) and "Sign out" not in text(client.get("/"))


def test_sign_in_goes_only_to_local_pages(client: FlaskClient) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example"):
        client = client.application.test_client()
        response = client.post("/login", data={"csrf_token": csrf_token(client),
                                               "password": ADMIN_PASSWORD, "next": target})
        assert response.headers["Location"] == "/"


def test_sign_in_needs_the_csrf_token(client: FlaskClient) -> None:
    assert client.post("/login", data={"password": ADMIN_PASSWORD}).status_code == 403


def test_failed_sign_ins_are_rate_limited(make_app: Callable[..., Flask],
                                          data_dir: Path) -> None:
    app = make_app(data_dir, LOGIN_ATTEMPTS=3)
    client = app.test_client()
    token = csrf_token(client)
    for _ in range(3):
        assert client.post("/login", data={"csrf_token": token,
                                           "password": "guess"}).status_code == 401
    limited = client.post("/login", data={"csrf_token": token, "password": ADMIN_PASSWORD})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) > 0
    assert "Too many failed sign-ins" in text(limited)
    other = app.test_client()  # another address is not limited
    assert other.post("/login", data={"csrf_token": csrf_token(other),
                                      "password": ADMIN_PASSWORD},
                      environ_base={"REMOTE_ADDR": "10.0.0.9"}).status_code == 303


def test_session_cookie_is_secure_over_https_or_when_configured(
    make_app: Callable[..., Flask], data_dir: Path, app: Flask
) -> None:
    https = app.test_client()
    page = https.get("/login", base_url="https://photos.example")
    assert "Secure" in page.headers["Set-Cookie"]
    forced = make_app(data_dir, COOKIE_SECURE="always").test_client()
    assert "Secure" in forced.get("/login").headers["Set-Cookie"]


def test_pages_that_write_need_a_signed_in_user(client: FlaskClient, app: Flask) -> None:
    response = client.get("/upload")
    assert response.status_code == 302 and "/login?next=/upload" in response.headers["Location"]
    assert client.get("/admin").status_code == 302
    token = csrf_token(client, "/")
    cat = ids(app)["cat.png"]
    edit = client.post(f"/images/{cat}/edit", data={"csrf_token": token, "title": "Hacked"})
    assert edit.status_code == 401 and "Sign in" in text(edit)
    delete = client.post(f"/images/{cat}/delete", data={"csrf_token": token})
    assert delete.status_code == 401
    upload = client.post("/upload", data={"csrf_token": token,
                                          "images": (io.BytesIO(image_bytes()), "a.png")})
    assert upload.status_code == 401
    assert app.extensions["hybrid_search"].get(cat).title == "Close-up of a tabby cat"
    assert count(app) == 12


def test_require_login_makes_reading_private(make_app: Callable[..., Flask], data_dir: Path,
                                             ) -> None:
    app = make_app(data_dir, REQUIRE_LOGIN=True)
    client = app.test_client()
    for path in ("/", "/?q=cat", "/images/1", "/images/1/thumb"):
        response = client.get(path)
        assert response.status_code == 302 and "/login" in response.headers["Location"]
    assert client.get("/login").status_code == 200
    assert client.get("/static/style.css").status_code == 200
    api = client.post("/api/search", json={"text": "cat"})
    assert api.status_code == 401 and api.json["error"]
    assert "Bearer" in api.headers["WWW-Authenticate"]
    assert client.get("/api/images/1").status_code == 401
    secret, _ = app.extensions["hybrid_search.web"].accounts.create_token("reader")
    assert client.post("/api/search", json={"text": "cat"},
                       headers=bearer(secret)).status_code == 200
    sign_in(client)
    assert client.get("/?q=cat").status_code == 200
    thumb = client.get("/images/1/thumb")
    assert thumb.status_code == 200 and "private" in thumb.headers["Cache-Control"]


# -- editing, deleting and adding photos on the pages --------------------------------------
def test_editing_annotations_reindexes_at_once(admin_client: FlaskClient, app: Flask) -> None:
    cat = ids(app)["cat.png"]
    page = text(admin_client.get(f"/images/{cat}"))
    assert "Edit title, description and tags" in page and "Delete this photo" in page
    # Made-up words: no synonym or machine-made tag can match them by chance.
    assert keyword_ids(admin_client, "zorblax") == []
    assert keyword_ids(admin_client, "chelsea") == [cat]
    response = admin_client.post(f"/images/{cat}/edit", data={
        "csrf_token": csrf_token(admin_client, f"/images/{cat}"),
        "title": "  Sleepy   zorblax on a sofa ", "description": "Sleeping now.",
        "tags": "zorblax; sofa, Pet",
    })
    assert response.status_code == 303 and response.headers["Location"] == f"/images/{cat}"
    html = text(admin_client.get(f"/images/{cat}"))
    assert "Saved." in html and "Sleepy zorblax on a sofa" in html
    record = app.extensions["hybrid_search"].get(cat)
    assert record.title == "Sleepy zorblax on a sofa"
    assert set(record.tags) == {"zorblax", "sofa", "pet"}
    assert keyword_ids(admin_client, "zorblax") == [cat]
    assert result_ids(text(admin_client.get("/?q=zorblax")))[0] == cat
    assert keyword_ids(admin_client, "chelsea") == []


def test_a_bad_edit_is_refused_and_changes_nothing(admin_client: FlaskClient,
                                                   app: Flask) -> None:
    cat = ids(app)["cat.png"]
    response = admin_client.post(f"/images/{cat}/edit", data={
        "csrf_token": csrf_token(admin_client, f"/images/{cat}"),
        "title": "x" * 501, "description": "", "tags": "",
    })
    assert response.status_code == 400
    assert "Title is longer than 500 characters" in text(response)
    assert app.extensions["hybrid_search"].get(cat).title == "Close-up of a tabby cat"


def test_annotation_text_is_escaped_everywhere(admin_client: FlaskClient, app: Flask) -> None:
    cat = ids(app)["cat.png"]
    evil = '<script>alert("x")</script> <img src=x onerror=alert(1)> cat'
    admin_client.post(f"/images/{cat}/edit", data={
        "csrf_token": csrf_token(admin_client, f"/images/{cat}"),
        "title": evil, "description": evil, "tags": evil,
    })
    for path in (f"/images/{cat}?q=cat", "/?q=cat", "/", f"/?like={ids(app)['coffee.png']}"):
        html = text(admin_client.get(path))
        assert "<script>alert" not in html and "<img src=x" not in html, path
        assert "&lt;script&gt;" in html, path
    assert "<mark>cat</mark>" in text(admin_client.get("/?q=cat"))
    flash = text(admin_client.post(f"/images/{cat}/delete", data={
        "csrf_token": csrf_token(admin_client, "/")}, follow_redirects=True))
    assert "<script>alert" not in flash and "Deleted “&lt;script&gt;" in flash


def test_deleting_a_photo_removes_it_everywhere(admin_client: FlaskClient, app: Flask) -> None:
    collection = app.extensions["hybrid_search"]
    rocket = collection.get(ids(app)["rocket.jpg"])
    admin_client.get(f"/images/{rocket.id}/thumb")
    thumbs = collection.root / "thumbs" / rocket.sha256[:2]
    assert list(thumbs.glob(rocket.sha256 + "*"))
    response = admin_client.post(f"/images/{rocket.id}/delete",
                                 data={"csrf_token": csrf_token(admin_client, "/")})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert "Deleted “Falcon 9 rocket" in text(admin_client.get("/"))
    assert admin_client.get(f"/images/{rocket.id}").status_code == 404
    assert not list(thumbs.glob(rocket.sha256 + "*"))
    assert rocket.id not in result_ids(text(admin_client.get("/?q=rocket")))
    assert count(app) == 11
    assert (PHOTOS_DIR / "rocket.jpg").is_file()  # a file added from a folder stays


def test_adding_one_or_many_photos_with_annotations(admin_client: FlaskClient,
                                                    app: Flask) -> None:
    assert "Add photos" in text(admin_client.get("/upload"))
    token = csrf_token(admin_client, "/upload")
    response = admin_client.post("/upload", data={
        "csrf_token": token, "title": "Holiday snaps", "description": "Beach day",
        "tags": "holiday, beach",
        "images": [(io.BytesIO(image_bytes((250, 200, 40))), "beach-1.png"),
                   (io.BytesIO(image_bytes((40, 90, 250), fmt="JPEG")), "beach-2.jpg")],
    })
    assert response.status_code == 303 and response.headers["Location"] == "/"
    assert "Added 2 photos." in text(admin_client.get("/"))
    assert count(app) == 14
    found = keyword_ids(admin_client, "holiday")
    assert len(found) == 2 and set(result_ids(text(admin_client.get("/?q=holiday")))[:2]) == set(
        found)
    record = app.extensions["hybrid_search"].get(found[0])
    assert record.tags == ("holiday", "beach") and record.filename.startswith("beach-")
    assert len(originals(app)) == 2
    one = admin_client.post("/upload", data={
        "csrf_token": token, "images": (io.BytesIO(image_bytes((1, 2, 3))), "one.png")})
    assert one.status_code == 303 and re.fullmatch(r"/images/\d+", one.headers["Location"])
    again = admin_client.post("/upload", data={
        "csrf_token": token, "images": (io.BytesIO(image_bytes((1, 2, 3))), "same.png")},
        follow_redirects=True)
    assert "Already in the collection" in text(again)
    assert count(app) == 15


def test_a_bad_file_among_uploads_adds_nothing(admin_client: FlaskClient, app: Flask) -> None:
    response = admin_client.post("/upload", data={
        "csrf_token": csrf_token(admin_client, "/upload"),
        "images": [(io.BytesIO(image_bytes()), "good.png"),
                   (io.BytesIO(image_bytes()[:60]), "broken.png"),
                   (io.BytesIO(b"%PDF-1.4 not a photo"), "doc.pdf")],
    })
    assert response.status_code == 400
    html = text(response)
    assert "Nothing was added." in html and "broken.png" in html
    assert "doc.pdf: unsupported format PDF" in html
    assert count(app) == 12 and originals(app) == []
    empty = admin_client.post("/upload", data={"csrf_token": csrf_token(admin_client,
                                                                         "/upload")})
    assert empty.status_code == 400 and "Choose at least one photo" in text(empty)


def test_an_upload_over_the_limit_is_413(make_app: Callable[..., Flask],
                                         data_dir: Path) -> None:
    app = make_app(data_dir, settings={"max_upload_bytes": 20 * 1024})
    client = app.test_client()
    sign_in(client)
    response = client.post("/upload", data={
        "csrf_token": csrf_token(client, "/upload"),
        "images": [(io.BytesIO(image_bytes()), "small.png"),
                   (io.BytesIO(image_bytes(size=(300, 300), fmt="BMP")), "big.bmp")],
    })
    assert response.status_code == 413
    assert "big.bmp is over the limit of 20 KB" in text(response)
    assert count(app) == 12


# -- the admin page ------------------------------------------------------------------------
def test_admin_page_makes_and_revokes_api_tokens(admin_client: FlaskClient) -> None:
    token = csrf_token(admin_client, "/admin")
    made = admin_client.post("/admin/tokens", data={"csrf_token": token, "name": "importer"})
    assert made.status_code == 201
    secret = re.search(r'id="new-token">([^<]+)<', text(made))
    assert secret is not None
    api = admin_client.application.test_client()  # no session: the token alone
    headers = bearer(secret.group(1))
    assert api.delete("/api/images/1", headers=headers).status_code == 200
    listing = text(admin_client.get("/admin"))
    assert "importer" in listing and secret.group(1) not in listing
    token_id = re.search(r'/admin/tokens/([0-9a-f]+)/revoke', listing)
    assert token_id is not None
    revoked = admin_client.post(f"/admin/tokens/{token_id.group(1)}/revoke",
                                data={"csrf_token": token})
    assert revoked.status_code == 303
    assert api.delete("/api/images/2", headers=headers).status_code == 403
    assert admin_client.post("/admin/tokens/deadbeef/revoke",
                             data={"csrf_token": token}).status_code == 404


def test_admin_changes_the_password(admin_client: FlaskClient, app: Flask) -> None:
    token = csrf_token(admin_client, "/admin")
    short = admin_client.post("/admin/password", data={
        "csrf_token": token, "current": ADMIN_PASSWORD, "new": "short", "confirm": "short"})
    assert short.status_code == 400 and "at least 8 characters" in text(short)
    wrong = admin_client.post("/admin/password", data={
        "csrf_token": token, "current": "nope", "new": "a new password", "confirm":
        "a new password"})
    assert wrong.status_code == 400
    other = app.test_client()
    sign_in(other)
    done = admin_client.post("/admin/password", data={
        "csrf_token": token, "current": ADMIN_PASSWORD, "new": "a new password",
        "confirm": "a new password"})
    assert done.status_code == 303
    assert "Sign out" in text(admin_client.get("/"))  # this browser stays signed in
    assert "Sign out" not in text(other.get("/"))  # every other session ends
    sign_in(other, "a new password")


def test_first_run_generates_a_password_and_stores_only_its_hash(
    make_app: Callable[..., Flask], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "fresh"
    app = make_app(data, SECRET_KEY="")
    printed = capsys.readouterr().err
    match = re.search(r"the admin password is: (\S+)", printed)
    assert match, printed
    password = match.group(1)
    web = data / "web"
    stored = (web / "admin.json").read_text()
    assert password not in stored and json.loads(stored)["password_hash"].startswith("scrypt")
    for name in ("admin.json", "secret_key"):
        assert stat.S_IMODE((web / name).stat().st_mode) == 0o600
    assert app.secret_key == (web / "secret_key").read_text()
    client = app.test_client()
    sign_in(client, password)
    again = make_app(data, SECRET_KEY="")
    assert "admin password" not in capsys.readouterr().err
    assert again.secret_key == app.secret_key


def test_a_configured_password_replaces_the_stored_one(make_app: Callable[..., Flask],
                                                       data_dir: Path) -> None:
    app = make_app(data_dir, ADMIN_PASSWORD="from the settings")
    client = app.test_client()
    token = csrf_token(client)
    old = client.post("/login", data={"csrf_token": token, "password": ADMIN_PASSWORD})
    assert old.status_code == 401
    sign_in(client, "from the settings")
    html = text(client.get("/admin"))
    assert "set by the <code>admin_password</code> setting" in html


def test_web_options_come_from_the_environment(make_app: Callable[..., Flask], data_dir: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_WEB_REQUIRE_LOGIN", "true")
    monkeypatch.setenv("HYBRID_WEB_LOGIN_ATTEMPTS", "7")
    app = make_app(data_dir)
    assert app.config["REQUIRE_LOGIN"] is True and app.config["LOGIN_ATTEMPTS"] == 7
    monkeypatch.setenv("HYBRID_WEB_COOKIE_SECURE", "sometimes")
    from hybrid_search.exceptions import ConfigError

    with pytest.raises(ConfigError, match="cookie_secure"):
        make_app(data_dir)


# -- security headers and error formats ----------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/?q=cat", "/images/1", "/images/1/thumb",
                                  "/api/images/1", "/static/style.css", "/nope", "/api/nope",
                                  "/login"])
def test_every_response_has_the_security_headers(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_no_page_loads_anything_from_elsewhere(client: FlaskClient, app: Flask) -> None:
    pages = ["/", "/?q=cat", f"/images/{ids(app)['cat.png']}", "/login"]
    for path in pages:
        html = text(client.get(path))
        assert not re.search(r'(src|href)="(https?:)?//', html), path
        assert "<script>" not in html and " style=" not in html, path  # CSP: no inline code
    assert client.get("/static/app.js").mimetype in ("text/javascript", "application/javascript")


def test_errors_are_json_for_the_api_and_for_json_clients(client: FlaskClient) -> None:
    response = client.get("/api/nope")
    assert response.status_code == 404 and response.json["error"]
    response = client.put("/api/images/1")
    assert response.status_code == 405 and "error" in response.json
    assert "GET" in response.headers["Allow"]
    response = client.get("/nope", headers={"Accept": "application/json"})
    assert response.status_code == 404 and response.json["error"]
    assert client.get("/nope").mimetype == "text/html"


# -- the JSON API: search ------------------------------------------------------------------
RESULT_KEYS = {"id", "filename", "title", "tags", "score", "signals", "image_url",
               "thumbnail_url", "rank", "description", "normalized", "page_url"}


def test_api_search_by_words(client: FlaskClient, app: Flask) -> None:
    response = client.post("/api/search", json={"text": "coffee cup", "limit": 3})
    assert response.status_code == 200
    body = response.json
    first = body["results"][0]
    assert set(first) >= RESULT_KEYS and "path" not in first
    assert first["filename"] == "coffee.png" and first["id"] == ids(app)["coffee.png"]
    assert "coffee cup" in first["tags"] and first["signals"]["text"] > 0
    assert body["total"] >= 1 and body["limit"] == 3 and body["suggestion"] is None
    thumb = client.get(first["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.mimetype == "image/jpeg"
    assert client.get(first["image_url"]).mimetype == "image/png"
    assert client.get(first["page_url"]).status_code == 200
    no_server_paths(text(response), app)
    typo = client.get("/api/search?text=rockt").json
    assert typo["corrected_query"] == "rocket" and typo["results"][0]["filename"] == "rocket.jpg"
    assert client.get("/api/search?text=rocket+laucnh").json["suggestion"] == "rocket launch"


def test_api_search_by_an_uploaded_photo_base64_or_a_stored_one(
    client: FlaskClient, app: Flask
) -> None:
    by_name = ids(app)
    multipart = client.post("/api/search", data={
        "image": (io.BytesIO(crop("rocket.jpg")), "query.jpg"), "limit": "5"})
    assert multipart.status_code == 200
    assert multipart.json["results"][0]["id"] == by_name["rocket.jpg"]
    assert multipart.json["signals"] == ["image"]
    encoded = base64.b64encode(crop("cat.png")).decode()
    as_json = client.post("/api/search", json={"image": encoded, "alpha": 0.7})
    assert as_json.json["results"][0]["id"] == by_name["cat.png"]
    data_url = client.post("/api/search", json={"image": "data:image/jpeg;base64," + encoded,
                                                "text": "cat", "fusion": "rrf"})
    assert data_url.status_code == 200 and data_url.json["fusion"] == "rrf"
    assert data_url.json["results"][0]["id"] == by_name["cat.png"]
    like = client.get(f"/api/search?like={by_name['cat.png']}&limit=20").json
    assert len(like["results"]) == 11 and by_name["cat.png"] not in [
        r["id"] for r in like["results"]]
    paged = client.post("/api/search", data={"like": str(by_name["cat.png"]), "limit": "4",
                                              "offset": "8"}).json
    assert [r["id"] for r in paged["results"]] == [r["id"] for r in like["results"][8:11]]


@pytest.mark.parametrize("body", [
    {"text": "cat", "alpha": "abc"},
    {"text": "cat", "alpha": 2},
    {"text": "cat", "alpha": True},
    {"text": "cat", "alpha": [0.5]},
    {"text": "cat", "limit": "ten"},
    {"text": "cat", "limit": 0},
    {"text": "cat", "limit": 2.5},
    {"text": "cat", "limit": 10**30},
    {"text": "cat", "offset": -1},
    {"text": "cat", "fusion": "magic"},
    {"text": "cat", "fusion": 3},
    {"text": "cat", "normalization": "sideways"},
    {"text": 5},
    {"text": ["cat"]},
    {"text": "x" * 1001},
    {"image": "!!! not base64 !!!"},
    {"image": 12},
    {"image": base64.b64encode(b"hello, not a photo").decode()},
    {"image": base64.b64encode(image_bytes()[:50]).decode()},
    {"like": "abc"},
    {"like": 0},
    {"like": 1, "image": base64.b64encode(image_bytes()).decode()},
    {},
    {"text": "   "},
    {"query": "cat"},
])
def test_api_search_bad_input_is_400_with_a_message(client: FlaskClient,
                                                    body: dict[str, Any]) -> None:
    response = client.post("/api/search", json=body)
    assert response.status_code == 400, response.json
    assert isinstance(response.json["error"], str) and response.json["error"]


@pytest.mark.parametrize(("data", "content_type"), [
    ("{not json", "application/json"),
    ("[1, 2]", "application/json"),
    ('"cat"', "application/json"),
    ("null", "application/json"),
])
def test_api_search_body_must_be_a_json_object(client: FlaskClient, data: str,
                                               content_type: str) -> None:
    response = client.post("/api/search", data=data, content_type=content_type)
    assert response.status_code == 400 and response.json["error"]


def test_api_search_multipart_errors(client: FlaskClient) -> None:
    response = client.post("/api/search", data={"image": (io.BytesIO(b""), "empty.jpg")})
    assert response.status_code == 400
    response = client.post("/api/search", data={"image": (io.BytesIO(b"GIF89a garbage"),
                                                          "bad.gif"), "text": "cat"})
    assert response.status_code == 400 and "bad.gif" in response.json["error"]
    assert client.post("/api/search", data={"alpha": "0.3"}).status_code == 400
    assert client.get("/api/search?text=cat&offset=1e3").status_code == 400
    assert client.get("/api/search?like=99999").status_code == 404


def test_api_search_over_the_limit_is_413(make_app: Callable[..., Flask],
                                          data_dir: Path) -> None:
    app = make_app(data_dir, settings={"max_upload_bytes": 20 * 1024})
    client = app.test_client()
    big = image_bytes(size=(300, 300), fmt="BMP")
    response = client.post("/api/search", data={"image": (io.BytesIO(big), "big.bmp")})
    assert response.status_code == 413 and "20 KB" in response.json["error"]
    response = client.post("/api/search", json={"image": base64.b64encode(big).decode()})
    assert response.status_code == 413 and response.json["error"]
    huge = client.post("/api/search", data=b"x" * 1_200_000, content_type="application/json")
    assert huge.status_code == 413 and huge.json["error"]


# -- the JSON API: images ------------------------------------------------------------------
def test_api_get_and_list_images(client: FlaskClient, app: Flask) -> None:
    cat = ids(app)["cat.png"]
    record = client.get(f"/api/images/{cat}").json
    assert record["filename"] == "cat.png" and record["title"] == "Close-up of a tabby cat"
    assert record["width"] > 0 and record["format"] == "PNG"
    assert "path" not in record and record["thumbnail_url"].startswith(f"/images/{cat}/thumb")
    missing = client.get("/api/images/99999")
    assert missing.status_code == 404 and missing.json["error"] == "No image with id 99999."
    assert client.get("/api/images/99999999999999999999999").status_code == 404
    listing = client.get("/api/images?limit=5&offset=10").json
    assert listing["total"] == 12 and len(listing["images"]) == 2
    assert client.get("/api/images?limit=-3").status_code == 400
    no_server_paths(json.dumps(listing), app)


def test_api_writes_need_credentials(client: FlaskClient, app: Flask, api_token: str) -> None:
    attempts = [
        ("post", "/api/images", {"data": {"images": (io.BytesIO(image_bytes()), "a.png")}}),
        ("patch", "/api/images/1", {"json": {"title": "x"}}),
        ("delete", "/api/images/1", {}),
    ]
    for method, path, kwargs in attempts:
        anonymous = getattr(client, method)(path, **dict(kwargs))
        assert anonymous.status_code == 401, path
        assert anonymous.json["error"] and "Bearer" in anonymous.headers["WWW-Authenticate"]
    for header in ("Bearer wrong-token", "Basic YWRtaW46cGFzcw==", "Bearer ", api_token):
        response = client.delete("/api/images/1", headers={"Authorization": header})
        assert response.status_code == 403, header
    assert count(app) == 12
    # The page's own session may write too, with its CSRF token in a header.
    sign_in(client)
    assert client.delete("/api/images/1").status_code == 403
    assert "CSRF" in client.delete("/api/images/1").json["error"]
    token = csrf_token(client, "/")
    assert client.delete("/api/images/1", headers={"X-CSRF-Token": token}).status_code == 200


def test_api_adds_photos_with_annotations(client: FlaskClient, app: Flask,
                                          api_token: str) -> None:
    response = client.post("/api/images", headers=bearer(api_token), data={
        "images": [(io.BytesIO(image_bytes((10, 200, 10))), "../../etc/green.png"),
                   (io.BytesIO(image_bytes((10, 10, 200))), "blue.png")],
        "title": "Test cards", "tags": "test; card",
    })
    assert response.status_code == 201
    added = response.json["images"]
    assert [a["filename"] for a in added] == ["green.png", "blue.png"]
    assert all(a["created"] and a["tags"] == ["test", "card"] and "path" not in a for a in added)
    assert client.get(added[0]["thumbnail_url"]).status_code == 200
    assert set(keyword_ids(client, "card")) == {a["id"] for a in added}
    again = client.post("/api/images", headers=bearer(api_token),
                        data={"image": (io.BytesIO(image_bytes((10, 10, 200))), "b.png")})
    assert again.status_code == 200 and again.json["images"][0]["created"] is False
    encoded = base64.b64encode(image_bytes((120, 60, 0), fmt="JPEG")).decode()
    as_json = client.post("/api/images", headers=bearer(api_token), json={
        "images": [{"image": encoded, "filename": "orange.jpg", "title": "Orange card",
                    "description": "From JSON", "tags": ["orange", "card"]}]})
    assert as_json.status_code == 201
    one = as_json.json["images"][0]
    assert one["format"] == "JPEG" and one["description"] == "From JSON"
    single = client.post("/api/images", headers=bearer(api_token), json={
        "image": base64.b64encode(image_bytes((3, 3, 3))).decode()})
    assert single.status_code == 201 and single.json["images"][0]["filename"] == "upload-1"
    assert count(app) == 16


@pytest.mark.parametrize("payload", [
    {"data": {"images": (io.BytesIO(b"not an image at all"), "x.png")}},
    {"data": {"title": "no file"}},
    {"json": {"image": "***"}},
    {"json": {"images": "nope"}},
    {"json": {"images": [5]}},
    {"json": {"images": [{"image": base64.b64encode(b"text").decode()}]}},
    {"json": {"image": base64.b64encode(b"GIF89a").decode(), "title": 5}},
    {"json": {"image": "AAAA", "colour": "red"}},
    {"json": {}},
    {"json": [1]},
])
def test_api_upload_refuses_bad_input_and_stores_nothing(
    client: FlaskClient, app: Flask, api_token: str, payload: dict[str, Any]
) -> None:
    if "data" in payload:  # a fresh stream for each parametrised run
        payload = {"data": {k: (io.BytesIO(v[0].getvalue()), v[1]) if isinstance(v, tuple)
                            else v for k, v in payload["data"].items()}}
    response = client.post("/api/images", headers=bearer(api_token), **payload)
    assert response.status_code == 400, response.json
    assert response.json["error"]
    assert count(app) == 12 and originals(app) == []


def test_api_upload_with_one_bad_file_stores_none(client: FlaskClient, app: Flask,
                                                  api_token: str) -> None:
    response = client.post("/api/images", headers=bearer(api_token), data={"images": [
        (io.BytesIO(image_bytes()), "good.png"), (io.BytesIO(b"<svg></svg>"), "drawing.svg")]})
    assert response.status_code == 400
    assert "drawing.svg: unsupported format SVG" in response.json["error"]
    assert count(app) == 12 and originals(app) == []


def test_api_upload_over_the_limit_is_413(make_app: Callable[..., Flask],
                                          data_dir: Path) -> None:
    app = make_app(data_dir, settings={"max_upload_bytes": 20 * 1024})
    secret, _ = app.extensions["hybrid_search.web"].accounts.create_token("t")
    client = app.test_client()
    big = image_bytes(size=(300, 300), fmt="BMP")
    response = client.post("/api/images", headers=bearer(secret),
                           data={"images": (io.BytesIO(big), "big.bmp")})
    assert response.status_code == 413 and "big.bmp" in response.json["error"]
    response = client.post("/api/images", headers=bearer(secret),
                           json={"image": base64.b64encode(big).decode()})
    assert response.status_code == 413
    # More than max_files_per_upload photos' worth (a raw body: no client-side temp file).
    many = client.post("/api/images", headers=bearer(secret), data=b"x" * (21 * 20 * 1024
                       + (1 << 20)), content_type="multipart/form-data; boundary=x")
    assert many.status_code == 413 and many.json["error"]
    assert count(app) == 12 and originals(app) == []


def test_api_patch_changes_annotations_and_reindexes(client: FlaskClient, app: Flask,
                                                     api_token: str) -> None:
    cat = ids(app)["cat.png"]
    response = client.patch(f"/api/images/{cat}", headers=bearer(api_token),
                            json={"title": "Chelsea the cat", "add_tags": ["sleepy"],
                                  "remove_tags": "pet"})
    assert response.status_code == 200
    body = response.json
    assert body["title"] == "Chelsea the cat" and "sleepy" in body["tags"]
    assert "pet" not in body["tags"] and body["description"].startswith("Close-up of Chelsea")
    assert keyword_ids(client, "sleepy") == [cat]
    form = client.patch(f"/api/images/{cat}", headers=bearer(api_token),
                        data={"tags": "one, two"})
    assert form.status_code == 200 and form.json["tags"] == ["one", "two"]


@pytest.mark.parametrize("body", [
    {"title": 5}, {"description": ["x"]}, {"tags": 5}, {"tags": [1, 2]}, {"add_tags": {}},
    {"title": "a\x00b"}, {"colour": "red"}, {}, {"title": "x" * 501},
])
def test_api_patch_refuses_bad_values(client: FlaskClient, app: Flask, api_token: str,
                                      body: dict[str, Any]) -> None:
    cat = ids(app)["cat.png"]
    response = client.patch(f"/api/images/{cat}", headers=bearer(api_token), json=body)
    assert response.status_code == 400 and response.json["error"]
    assert app.extensions["hybrid_search"].get(cat).title == "Close-up of a tabby cat"


def test_api_patch_and_delete_unknown_ids_are_404(client: FlaskClient, api_token: str) -> None:
    assert client.patch("/api/images/99999", headers=bearer(api_token),
                        json={"title": "x"}).status_code == 404
    assert client.delete("/api/images/99999", headers=bearer(api_token)).status_code == 404


def test_api_delete(client: FlaskClient, app: Flask, api_token: str) -> None:
    cat = ids(app)["cat.png"]
    response = client.delete(f"/api/images/{cat}", headers=bearer(api_token))
    assert response.status_code == 200 and response.json == {"deleted": cat}
    assert client.get(f"/api/images/{cat}").status_code == 404
    assert client.delete(f"/api/images/{cat}", headers=bearer(api_token)).status_code == 404
    assert cat not in [r["id"] for r in client.get("/api/search?text=cat").json["results"]]


# -- serving -------------------------------------------------------------------------------
def test_serve_runs_waitress_and_prints_the_url(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybrid_search.web import server

    servers: list[Any] = []
    real_create = server.create_server

    def recording_create(app: Flask, **options: Any) -> Any:
        servers.append(real_create(app, **options))
        return servers[-1]

    monkeypatch.setattr(server, "create_server", recording_create)
    settings = settings_for(data_dir, host="127.0.0.1", port=0)
    thread = threading.Thread(target=server.serve, args=(settings,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not servers and time.monotonic() < deadline:
        time.sleep(0.02)
    port = servers[0].effective_port
    url = f"http://127.0.0.1:{port}/"
    html = ""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "?q=cat", timeout=5) as response:
                html = response.read().decode()
            break
        except OSError:
            time.sleep(0.05)
    assert "Close-up of a tabby <mark>cat</mark>" in html
    assert servers[0].adj.threads == 8 and servers[0].adj.ident == "hybrid-search"
    servers[0].close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    err = capsys.readouterr().err
    assert f"serving on {url}" in err and "12 photos" in err


def test_server_url_brackets_ipv6() -> None:
    from hybrid_search.web.server import server_url

    assert server_url("127.0.0.1", 5000) == "http://127.0.0.1:5000/"
    assert server_url("::1", 8080) == "http://[::1]:8080/"


def test_create_app_reads_the_settings_like_the_cli(data_dir: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """`flask --app hybrid_search.web.app:create_app run` calls create_app() bare."""
    from hybrid_search.web import create_app

    monkeypatch.setenv("HYBRID_SEARCH_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HYBRID_SEARCH_LIMIT", "4")
    app = create_app()
    try:
        collection = app.extensions["hybrid_search"]
        assert collection.root == data_dir.resolve() and collection.settings.limit == 4
        assert len(result_ids(text(app.test_client().get("/")))) == 4
    finally:
        app.extensions["hybrid_search"].close()


# -- helpers of the web layer --------------------------------------------------------------
def test_highlighting_marks_stems_and_prefixes_and_escapes_the_rest() -> None:
    from markupsafe import Markup

    from hybrid_search.web.highlight import highlight, matched_first, query_terms, query_words

    assert [w.text for w in query_words('cat -dog NOT "red car" title:rock* AND')] == [
        "cat", "dog", "red", "car", "rock"]
    assert [w.negated for w in query_words('cat -dog NOT "red car"')] == [
        False, True, True, True]
    terms = query_terms("Cats -dog rock*")
    out = highlight("<b>Cat</b> & dog on rocks", terms)
    assert isinstance(out, Markup)
    assert str(out) == "&lt;b&gt;<mark>Cat</mark>&lt;/b&gt; &amp; dog on <mark>rocks</mark>"
    assert str(highlight("<i>x</i>", query_terms(""))) == "&lt;i&gt;x&lt;/i&gt;"
    assert matched_first(("pet", "fur", "tabby cat"), query_terms("cats")) == [
        "tabby cat", "pet", "fur"]


def test_query_photos_expire_and_are_pruned(tmp_path: Path) -> None:
    from hybrid_search.exceptions import QueryError
    from hybrid_search.web.queries import QueryImages

    queries = QueryImages(tmp_path, ttl_s=60, max_pixels=10_000_000, max_files=2)
    keys = [queries.put(image_bytes((n, 0, 0)), f"{n}.png") for n in (10, 20, 30)]
    assert queries.get(keys[2]) == image_bytes((30, 0, 0))
    with pytest.raises(QueryError, match="no longer on the server"):
        queries.get(keys[0])  # pruned: at most two are kept
    old = time.time() - 120
    for path in (tmp_path / "queries").iterdir():
        os.utime(path, (old, old))
    queries.prune()
    assert list((tmp_path / "queries").iterdir()) == []
    with pytest.raises(QueryError):
        queries.get("not-a-key")


def test_the_rate_limiter_forgets_after_its_window(monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_search.web import security

    now = [1000.0]
    monkeypatch.setattr(security.time, "monotonic", lambda: now[0])
    limiter = security.RateLimiter(attempts=2, window_s=60)
    limiter.fail("a")
    limiter.fail("a")
    assert limiter.retry_after("a") == 60 and limiter.retry_after("b") == 0
    now[0] += 61
    assert limiter.retry_after("a") == 0
    limiter.fail("a")
    limiter.reset("a")
    assert limiter.retry_after("a") == 0
