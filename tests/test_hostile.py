"""Hostile input: property-based tests of the query parser and the search API, and a corpus of
bad files sent through ingest, the upload API, the upload page and the query-photo routes.

Every bad file must be refused with a message that names the problem (400, or 413 for size),
store nothing (no row, no Whoosh document, no file under `originals/` or `queries/`) and
never cause a 500: the apps run with TESTING, so an unhandled exception fails the test
outright. Files that decode as images (polyglots) may be accepted, but are stored by content
hash and served with the image's type and `nosniff`, never as HTML.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import itertools
import json
import random
import shutil
import struct
import urllib.parse
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import csrf_token, settings_for
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from hybrid_search.collection import Collection
from hybrid_search.exceptions import QueryError, StorageError
from hybrid_search.ingest import ingest
from hybrid_search.search import SearchRequest, search
from hybrid_search.text_index import TextDoc, TextIndex

pytestmark = pytest.mark.model

# Searches write nothing, so one app and one collection serve every example of a property;
# examples are derandomised (the same on every run) and nothing is saved to a database.
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
API_STATUSES = {200, 400, 404, 413}


# -- the demo collection, shared by the read-only properties --------------------------------
@pytest.fixture(scope="module")
def module_data(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the demo data directory for this module's read-only tests."""
    target = tmp_path_factory.mktemp("hostile") / "data"
    shutil.copytree(demo_data_dir, target)
    return target


@pytest.fixture(scope="module")
def collection(module_data: Path) -> Iterator[Collection]:
    """The demo collection, opened once."""
    with Collection(settings_for(module_data)) as opened:
        yield opened


@pytest.fixture(scope="module")
def search_client(module_data: Path) -> Iterator[FlaskClient]:
    """An anonymous client of an app over the demo collection, for searches only."""
    from hybrid_search.web import create_app

    app = create_app({"TESTING": True, "SECRET_KEY": "hostile"},
                     settings=settings_for(module_data))
    try:
        yield app.test_client()
    finally:
        app.extensions["hybrid_search"].close()


# -- (a) query text --------------------------------------------------------------------------
QUERY_TOKENS = [
    "cat", "coffee", "astronaut", "AND", "OR", "NOT", "ANDNOT", "ANDMAYBE", "-", "+", "*", "?",
    "~", "^", "^2", "~3", '"', "'", "(", ")", "[", "]", "{", "}", "[a TO z]", "{1 TO}", ":",
    "title:", "tags:cat", "tag:", "auto:", "auto_tags:cat*", "description:\"red cup\"",
    "nofield:x", "title:(cat OR dog)", "\\", "\\\\", "/", "<script>", "&amp;", "%00", "\x00",
    "\t", "\n", "\r\n", "\u2028", "\u202e", "\u200d", "\ufeff", "İstanbul", "straße", "ﬁsh",
    "ǅ", "Ꮳ", "e\u0301", "🐈", "猫", "كوب", "ΑΣ", "colour", "grey", "the", "a",
    "cofee", "astronot", "1e308", "-0", "NaN",
]
words = st.one_of(st.sampled_from(QUERY_TOKENS), st.text(max_size=12))
# JSON can also carry lone surrogates ("\\ud800"); the web layer refuses them (see below).
LONE_SURROGATES = ["\ud800", "cat \udfff", "\ud83d\ud83d"]
query_texts = st.one_of(
    st.lists(words, max_size=12).map(" ".join),
    st.lists(words, max_size=6).map("".join),
    st.text(max_size=200),
    st.builds(lambda w, n: (w + " ") * n, st.sampled_from(QUERY_TOKENS), st.integers(50, 400)),
)


@given(text=query_texts)
@PROPERTY
def test_the_query_parser_takes_any_text(collection: Collection, text: str) -> None:
    ids = collection.store.all_ids()
    hits = collection.text.search(text, 20)
    assert isinstance(hits, list) and len(hits) <= 20
    assert len({i for i, _ in hits}) == len(hits) and {i for i, _ in hits} <= ids
    scores = [s for _, s in hits]
    assert all(isinstance(s, float) and s == s and s != float("inf") for s in scores)
    assert scores == sorted(scores, reverse=True)
    correction = collection.text.correct(text)
    if correction is not None:
        assert isinstance(correction.corrected, str) and correction.corrected != text
        assert all(isinstance(k, str) and isinstance(v, str)
                   for k, v in correction.replacements.items())


@given(text=query_texts, alpha=st.floats(0, 1), fusion=st.sampled_from(["linear", "rrf"]),
       like=st.sampled_from([None, 1, 5, 12]), limit=st.integers(1, 30),
       offset=st.integers(0, 40))
@PROPERTY
def test_search_takes_any_text_and_returns_a_well_formed_page(
    collection: Collection, text: str, alpha: float, fusion: str, like: int | None,
    limit: int, offset: int,
) -> None:
    request = SearchRequest(text=text, image_id=like, alpha=alpha, fusion=fusion, limit=limit,
                            offset=offset)
    if not text.strip() and like is None:
        with pytest.raises(QueryError, match="give search words, a query image, or both"):
            search(collection, request)
        return
    response = search(collection, request)
    ids = collection.store.all_ids()
    hit_ids = [h.record.id for h in response.hits]
    assert len(hit_ids) <= limit and len(set(hit_ids)) == len(hit_ids)
    assert set(hit_ids) <= ids and like not in hit_ids
    assert [h.rank for h in response.hits] == list(range(offset + 1, offset + len(hit_ids) + 1))
    assert len(hit_ids) == max(0, min(limit, response.total - offset))
    scores = [h.score for h in response.hits]
    assert all(s == s and abs(s) != float("inf") for s in scores)
    assert scores == sorted(scores, reverse=True)
    json.dumps(response.to_dict(), default=str)  # JSON-ready


def test_search_refuses_a_lone_surrogate_with_a_query_error(collection: Collection) -> None:
    with pytest.raises(QueryError):
        search(collection, SearchRequest(text="cat \ud800"))


# -- (b) the search API ----------------------------------------------------------------------
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                         st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=5), inner, max_size=3),
                           max_leaves=6)


@functools.cache
def small_png(color: tuple[int, int, int] = (30, 120, 200)) -> bytes:
    """A valid 32x24 PNG."""
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), color).save(buf, "PNG")
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


image_values = st.one_of(
    st.binary(max_size=300).map(b64),
    st.just(b64(small_png())),
    st.just("data:image/png;base64," + b64(small_png())),
    st.binary(min_size=1, max_size=64).map(lambda b: b64(small_png()[:40] + b)),
    st.text(max_size=40),
    json_values,
)
number_texts = st.sampled_from(["0", "1", "0.5", "-1", "1e9", "nan", "inf", "-inf", "1_0",
                                " 7 ", "0x10", "٣", "１", "9" * 30, "", "  "])
FIELD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "text": st.one_of(query_texts, st.sampled_from(LONE_SURROGATES), json_values),
    "alpha": st.one_of(st.floats(-1, 2), number_texts, json_values),
    "fusion": st.one_of(st.sampled_from(["linear", "rrf", "RRF", "", "borda", "linear\x00"]),
                        json_values),
    "normalization": st.one_of(st.sampled_from(["minmax", "zscore", "none"]), json_values),
    "limit": st.one_of(st.integers(-5, 2000), number_texts, json_values),
    "offset": st.one_of(st.integers(-5, 200_000), number_texts, json_values),
    "like": st.one_of(st.sampled_from([1, 7, 12, 0, -1, 99999, 2**63 - 1, 2**63, 2**64, "3"]),
                      number_texts, json_values),
    "image": image_values,
    "image_name": st.one_of(st.text(max_size=300), json_values),
}
json_bodies = st.one_of(
    st.fixed_dictionaries({}, optional=FIELD_VALUES),
    st.fixed_dictionaries({"text": st.sampled_from(["cat", "red cup"])},
                          optional={"like": FIELD_VALUES["like"],
                                    "alpha": FIELD_VALUES["alpha"],
                                    "image": FIELD_VALUES["image"]}),
    st.dictionaries(st.text(max_size=8), json_values, max_size=3),
    json_values,
)


def assert_well_formed(response: Any) -> None:
    """A 200 with a page of results, or an error status with a JSON message; never a 500."""
    assert response.status_code in API_STATUSES, (response.status_code, response.data[:300])
    body = response.get_json(silent=True)
    assert isinstance(body, dict), response.data[:300]
    if response.status_code == 200:
        results = body["results"]
        assert isinstance(results, list) and len(results) <= body["limit"]
        assert all(isinstance(r["id"], int) and "path" not in r for r in results)
    else:
        assert isinstance(body.get("error"), str) and body["error"].strip(), body


@given(body=json_bodies)
@PROPERTY
def test_api_search_answers_any_json_body_with_results_or_an_error(
    search_client: FlaskClient, body: Any
) -> None:
    assert_well_formed(search_client.post("/api/search", json=body))


form_values = st.one_of(st.text(max_size=30), number_texts, st.sampled_from(
    ["cat", "rrf", "linear", "1", "12", "0.3"]))


@given(fields=st.fixed_dictionaries({}, optional=dict.fromkeys(
           ["text", "alpha", "fusion", "normalization", "limit", "offset", "like", "image",
            "unknown"], form_values)),
       upload=st.one_of(st.none(), st.binary(max_size=400), st.just(small_png()),
                        st.binary(min_size=1, max_size=64).map(lambda b: small_png()[:60] + b)),
       as_query=st.booleans())
@PROPERTY
def test_api_search_answers_any_form_or_query_string(
    search_client: FlaskClient, fields: dict[str, str], upload: bytes | None, as_query: bool
) -> None:
    if as_query:
        response = search_client.get("/api/search?" + urllib.parse.urlencode(fields))
    else:
        data: dict[str, Any] = dict(fields)
        if upload is not None:
            data["image"] = (io.BytesIO(upload), "query.png")
        response = search_client.post("/api/search", data=data)
    assert_well_formed(response)


@given(raw=st.one_of(st.binary(max_size=200), st.text(max_size=100).map(str.encode),
                     st.sampled_from([b'{"text": "cat"', b'{"text": "\\ud800"}', b"[]", b"null",
                                      b'"cat"', b'{"text": NaN}', b"\xff\xfe{}"])))
@PROPERTY
def test_api_search_answers_any_raw_body(search_client: FlaskClient, raw: bytes) -> None:
    response = search_client.post("/api/search", data=raw, content_type="application/json")
    assert_well_formed(response)


@pytest.fixture(scope="module")
def write_app(demo_data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    """An app over its own copy of the demo collection, which the PATCH property edits."""
    from hybrid_search.web import create_app

    data = tmp_path_factory.mktemp("hostile-writes") / "data"
    shutil.copytree(demo_data_dir, data)
    app = create_app({"TESTING": True, "SECRET_KEY": "hostile"}, settings=settings_for(data))
    try:
        yield app
    finally:
        app.extensions["hybrid_search"].close()


annotation_values = st.one_of(
    st.text(max_size=40),
    st.sampled_from([*LONE_SURROGATES, "<script>alert(1)</script>", "a\x00b", "x" * 501,
                     "tag; other, third", "  ", "\u202e\u200b"]),
    st.lists(st.text(max_size=8), max_size=4),
    json_values,
)
patch_bodies = st.one_of(
    st.fixed_dictionaries({}, optional=dict.fromkeys(
        ["title", "description", "tags", "add_tags", "remove_tags", "colour"],
        annotation_values)),
    json_values,
)


_patch_runs = itertools.count()


@given(image_id=st.sampled_from([1, 5, 12, 99999]), body=patch_bodies)
@PROPERTY
def test_api_patch_answers_any_json_body_and_refusals_change_nothing(
    write_app: Flask, image_id: int, body: Any
) -> None:
    # Whoosh names each new segment with the global `random`, which Hypothesis resets to one
    # state for every example: without a state of its own, each commit would reuse a name.
    random.seed(f"hostile-patch-{next(_patch_runs)}")
    collection = write_app.extensions["hybrid_search"]
    if not hasattr(write_app, "hostile_token"):
        write_app.hostile_token = write_app.extensions[  # type: ignore[attr-defined]
            "hybrid_search.web"].accounts.create_token("hostile")[0]
    exists = image_id in collection.store.all_ids()
    before = collection.get(image_id) if exists else None
    response = write_app.test_client().patch(
        f"/api/images/{image_id}", json=body,
        headers=bearer(write_app.hostile_token))  # type: ignore[attr-defined]
    assert response.status_code in {200, 400, 404}, response.data[:300]
    if response.status_code == 200:
        after = collection.get(image_id)
        assert response.json["title"] == after.title and response.json["tags"] == list(after.tags)
    else:
        assert response.json["error"].strip()
        assert (collection.get(image_id) if exists else None) == before
    assert collection.text.ids() == collection.store.all_ids()


def test_a_failed_index_commit_does_not_block_later_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the disk fills up while Whoosh writes its table of contents, once."""
    from whoosh.writing import SegmentWriter

    index = TextIndex(tmp_path / "whoosh", lock_timeout=0.2)
    real = SegmentWriter._commit_toc
    faults = iter([OSError(28, "No space left on device")])

    def commit_toc(self: SegmentWriter, segments: Any) -> None:
        fault = next(faults, None)
        if fault is not None:
            raise fault
        real(self, segments)

    monkeypatch.setattr(SegmentWriter, "_commit_toc", commit_toc)
    try:
        with pytest.raises(StorageError, match="cannot commit"):
            index.upsert([TextDoc(id=1, title="first")])
        index.upsert([TextDoc(id=2, title="second")])  # the disk has room again
        assert index.ids() == {2}
    finally:
        index.close()


# -- (c) a corpus of bad files ---------------------------------------------------------------
def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_claiming(width: int, height: int) -> bytes:
    """A well-formed PNG header (and a little pixel data) that claims width x height."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr)
            + _png_chunk(b"IDAT", zlib.compress(b"\0" * 1000, 9)) + _png_chunk(b"IEND", b""))


def bomb_png(side: int) -> bytes:
    """A real decompression bomb: a 1-bit side x side PNG of zeros, some tens of KB packed."""
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    compressor = zlib.compressobj(9)
    row = b"\0" * (1 + (side + 7) // 8)
    packed = b"".join(compressor.compress(row) for _ in range(side)) + compressor.flush()
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", packed)
            + _png_chunk(b"IEND", b""))


def gif_frame_bomb(width: int, height: int) -> bytes:
    """A GIF whose logical screen is 1x1 but whose first frame claims width x height."""
    return (b"GIF89a" + struct.pack("<HH", 1, 1) + b"\x80\x00\x00" + b"\0\0\0\xff\xff\xff"
            + b"\x2c" + struct.pack("<HHHH", 0, 0, width, height) + b"\x00"
            + b"\x02\x02\x4c\x01\x00\x3b")


@functools.cache
def noisy(fmt: str, size: tuple[int, int] = (96, 64)) -> bytes:
    """A noisy photo (so every byte of it matters) in a format."""
    buf = io.BytesIO()
    Image.effect_noise(size, 80).convert("RGB").save(buf, fmt)
    return buf.getvalue()


@functools.cache
def gif() -> bytes:
    buf = io.BytesIO()
    Image.new("P", (16, 16), 3).save(buf, "GIF")
    return buf.getvalue()


@functools.cache
def random_bytes(n: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(n)


@dataclass(frozen=True)
class Bad:
    """A file that must be refused: its name, bytes and words the reason must contain."""

    key: str
    name: str
    data: Callable[[], bytes]
    reason: str
    status: int = 400


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">'
       b'<script>alert(document.cookie)</script><rect width="10" height="10"/></svg>')
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"
BAD_FILES = [
    Bad("empty", "empty.jpg", lambda: b"", "empty file (0 bytes)"),
    Bad("truncated-jpeg", "cut.jpg", lambda: noisy("JPEG")[: len(noisy("JPEG")) // 2],
        "truncated or corrupt JPEG data"),
    Bad("truncated-png", "cut.png", lambda: noisy("PNG")[: len(noisy("PNG")) // 2],
        "truncated or corrupt PNG data"),
    Bad("png-header-only", "header.png", lambda: noisy("PNG")[:24], "corrupt PNG header"),
    Bad("jpeg-magic-then-garbage", "garbage.jpg",
        lambda: b"\xff\xd8\xff\xe0" + random_bytes(5000), "corrupt JPEG"),
    Bad("png-claiming-30000x30000", "huge.png", lambda: png_claiming(30000, 30000),
        "30000x30000 = 900000000 pixels, over the limit of 50000000 (setting max_image_pixels)"),
    Bad("decompression-bomb-png", "bomb.png", lambda: bomb_png(20000),
        "20000x20000 = 400000000 pixels, over the limit"),
    Bad("gif-frame-bomb", "frame.gif", lambda: gif_frame_bomb(60000, 60000),
        "decompression-bomb"),
    Bad("svg-with-script", "drawing.svg", lambda: SVG, "unsupported format SVG"),
    Bad("svg-named-png", "drawing.png", lambda: SVG, "unsupported format SVG"),
    Bad("html", "page.html", lambda: HTML, "not an image: the bytes look like text"),
    Bad("html-holding-gif-magic", "page.gif",
        lambda: b"<html>GIF89a<script>alert(1)</script></html>", "look like text"),
    Bad("pdf", "paper.pdf", lambda: b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n",
        "unsupported format PDF"),
    Bad("text-named-jpg", "passwd.jpg", lambda: b"root:x:0:0:root:/root:/bin/bash\n",
        "look like text"),
    Bad("zip-named-jpg", "archive.jpg", lambda: b"PK\x03\x04" + random_bytes(300),
        "not an image: unrecognised data"),
    Bad("random-10mb", "noise.jpg", lambda: random_bytes(10 * 1024 * 1024),
        "not an image: unrecognised data"),
]
BAD_IDS = [b.key for b in BAD_FILES]


@dataclass(frozen=True)
class Polyglot:
    """Bytes that are an image and something else too: accepted, but only ever as an image."""

    key: str
    name: str
    data: Callable[[], bytes]
    format: str
    mimetype: str


POLYGLOTS = [
    Polyglot("gif-then-html", "evil.html", lambda: gif() + HTML, "GIF", "image/gif"),
    Polyglot("jpeg-then-zip", "archive.zip",
             lambda: noisy("JPEG") + b"PK\x03\x04" + random_bytes(200), "JPEG", "image/jpeg"),
]

# Client file names of a valid photo, and the label each must be stored under.
HOSTILE_NAMES = [
    ("../../etc/passwd.jpg", "passwd.jpg"),
    ("..\\..\\windows\\win.png", "win.png"),
    ("/absolute/path.png", "path.png"),
    ("nul\x00byte.png", "nulbyte.png"),
    ("line\nbreak\r.png", "linebreak.png"),
    ("фото кошки.png", "фото кошки.png"),
    ("\u202egnp.exe", "gnp.exe"),
    ("zero\u200bwidth.png", "zerowidth.png"),
    ("..", "upload"),
    (".hidden.png", "hidden.png"),
    ("x" * 500 + ".png", "x" * 200),
]


def multipart(files: list[tuple[str, bytes]], field: str = "images",
              **fields: str) -> tuple[bytes, str]:
    """A multipart body whose file names travel as RFC 5987 `filename*` (any character)."""
    boundary = "hostile-boundary-2b7e1f"
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
             .encode() for k, v in fields.items()]
    for name, data in files:
        quoted = urllib.parse.quote(name, safe="")
        parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; "
                     f"filename=\"upload\"; filename*=UTF-8''{quoted}\r\n"
                     "Content-Type: application/octet-stream\r\n\r\n".encode() + data + b"\r\n")
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


@dataclass
class Snapshot:
    """What a data directory holds: rows, Whoosh documents and stored files."""

    ids: set[int]
    indexed: set[int]
    files: set[Path]

    @classmethod
    def of(cls, app: Flask) -> Snapshot:
        collection = app.extensions["hybrid_search"]
        root = collection.root
        files = {p.relative_to(root) for folder in ("originals", "queries")
                 for p in (root / folder).rglob("*") if p.is_file()}
        return cls(collection.store.all_ids(), collection.text.ids(), files)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def assert_refused(response: Any, bad: Bad, *, page: bool = False) -> str:
    """The response refuses the file with its status and a message naming the reason."""
    assert response.status_code == bad.status, (response.status_code, response.data[:400])
    if page:
        assert response.mimetype == "text/html"
        message = html.unescape(response.get_data(as_text=True))
    else:
        message = response.json["error"]
    assert bad.reason.lower() in message.lower(), message[:600]
    return message


@pytest.mark.parametrize("bad", BAD_FILES, ids=BAD_IDS)
def test_a_bad_file_is_refused_by_the_upload_api_and_stores_nothing(
    app: Flask, client: FlaskClient, api_token: str, bad: Bad
) -> None:
    before = Snapshot.of(app)
    body, content_type = multipart([(bad.name, bad.data())], title="hostile")
    message = assert_refused(client.post("/api/images", data=body, content_type=content_type,
                                         headers=bearer(api_token)), bad)
    assert message.startswith("Nothing was added") and bad.name in message
    as_json = client.post("/api/images", headers=bearer(api_token),
                          json={"image": b64(bad.data()), "filename": bad.name})
    if bad.data():
        assert_refused(as_json, bad)
    else:  # base64 of nothing is caught before decoding
        assert as_json.status_code == 400 and "no image" in as_json.json["error"]
    assert Snapshot.of(app) == before


@pytest.mark.parametrize("bad", BAD_FILES, ids=BAD_IDS)
def test_a_bad_file_is_refused_by_the_upload_page_and_stores_nothing(
    app: Flask, admin_client: FlaskClient, bad: Bad
) -> None:
    before = Snapshot.of(app)
    token = csrf_token(admin_client, "/upload")
    body, content_type = multipart([(bad.name, bad.data()), ("fine.png", small_png())],
                                   csrf_token=token, title="hostile")
    response = admin_client.post("/upload", data=body, content_type=content_type)
    message = assert_refused(response, bad, page=True)
    assert bad.name in message and "fine.png" not in message
    assert Snapshot.of(app) == before


@pytest.mark.parametrize("bad", BAD_FILES, ids=BAD_IDS)
def test_a_bad_file_is_refused_as_a_query_photo_and_kept_nowhere(
    app: Flask, client: FlaskClient, bad: Bad
) -> None:
    before = Snapshot.of(app)
    if bad.data():
        body, content_type = multipart([(bad.name, bad.data())], field="image")
        assert_refused(client.post("/api/search", data=body, content_type=content_type), bad)
        assert_refused(client.post("/api/search", json={"image": b64(bad.data())}), bad)
        body, content_type = multipart([(bad.name, bad.data())], field="image",
                                       csrf_token=csrf_token(client, "/"), q="")
        page = client.post("/search", data=body, content_type=content_type)
        assert_refused(page, bad, page=True)
    else:  # an empty file part is no query photo: the API says so, the page ignores it
        body, content_type = multipart([(bad.name, b"")], field="image")
        response = client.post("/api/search", data=body, content_type=content_type)
        assert response.status_code == 400 and "empty" in response.json["error"]
    assert Snapshot.of(app) == before


def test_bad_files_are_refused_by_ingest_with_their_reasons(data_dir: Path,
                                                            tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    paths = {}
    for bad in BAD_FILES:
        path = folder / f"{bad.key}-{bad.name}"
        path.write_bytes(bad.data())
        paths[str(path)] = bad
    with Collection(settings_for(data_dir)) as collection:
        before = (collection.store.all_ids(), collection.text.ids())
        report = ingest(collection, list(paths))
        assert report.added == [] and report.duplicates == []
        reasons = dict(report.failed)
        assert set(reasons) == set(paths)
        for path, bad in paths.items():
            assert bad.reason in reasons[path], (bad.key, reasons[path])
        assert (collection.store.all_ids(), collection.text.ids()) == before
    assert not (data_dir / "originals").exists()


def test_small_configured_limits_refuse_big_photos_and_big_files(
    make_app: Callable[..., Flask], data_dir: Path, tmp_path: Path
) -> None:
    """Dimensions under Pillow's limit but over max_image_pixels; bytes over max_upload_bytes."""
    app = make_app(data_dir, settings={"max_image_pixels": 10_000,
                                       "max_upload_bytes": 512 * 1024})
    secret, _ = app.extensions["hybrid_search.web"].accounts.create_token("t")
    client = app.test_client()
    before = Snapshot.of(app)
    wide = noisy("PNG", (200, 200))
    big = Bad("big", "big.png", lambda: random_bytes(600 * 1024), "max_upload_bytes", 413)
    tall = Bad("tall", "tall.png", lambda: wide,
               "200x200 = 40000 pixels, over the limit of 10000 (setting max_image_pixels)")
    for bad in (tall, big):
        body, content_type = multipart([(bad.name, bad.data())])
        assert_refused(client.post("/api/images", data=body, content_type=content_type,
                                   headers=bearer(secret)), bad)
        body, content_type = multipart([(bad.name, bad.data())], field="image")
        assert_refused(client.post("/api/search", data=body, content_type=content_type), bad)
    assert Snapshot.of(app) == before
    (tmp_path / "tall.png").write_bytes(wide)
    (tmp_path / "big.jpg").write_bytes(random_bytes(600 * 1024))
    collection = app.extensions["hybrid_search"]
    report = ingest(collection, [tmp_path / "tall.png", tmp_path / "big.jpg"])
    reasons = {Path(p).name: r for p, r in report.failed}
    assert "over the limit of 10000 (setting max_image_pixels)" in reasons["tall.png"]
    assert "over the limit of 524288 (setting max_upload_bytes)" in reasons["big.jpg"]
    assert Snapshot.of(app) == before


def stored_path(app: Flask, image_id: int) -> Path:
    """Where the collection keeps an image, relative to its data directory."""
    collection = app.extensions["hybrid_search"]
    return Path(collection.get(image_id).path).relative_to(collection.root)


@pytest.mark.parametrize("poly", POLYGLOTS, ids=[p.key for p in POLYGLOTS])
def test_a_polyglot_is_stored_by_hash_and_served_only_as_an_image(
    app: Flask, client: FlaskClient, api_token: str, poly: Polyglot
) -> None:
    data = poly.data()
    sha = hashlib.sha256(data).hexdigest()
    body, content_type = multipart([(poly.name, data)])
    response = client.post("/api/images", data=body, content_type=content_type,
                           headers=bearer(api_token))
    assert response.status_code == 201, response.json
    (record,) = response.json["images"]
    assert record["format"] == poly.format and record["sha256"] == sha
    ext = "jpg" if poly.format == "JPEG" else poly.format.lower()
    assert stored_path(app, record["id"]) == Path("originals", sha[:2], f"{sha}.{ext}")
    served = client.get(record["image_url"])
    assert served.status_code == 200 and served.data == data
    assert served.mimetype == poly.mimetype
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert "default-src 'self'" in served.headers["Content-Security-Policy"]
    assert served.headers["Content-Disposition"].startswith("inline")


@pytest.mark.parametrize(("name", "label"), HOSTILE_NAMES,
                         ids=[repr(n[:20]) for n, _ in HOSTILE_NAMES])
def test_a_hostile_file_name_is_only_a_label(app: Flask, client: FlaskClient,
                                             admin_client: FlaskClient, api_token: str,
                                             name: str, label: str) -> None:
    root = app.extensions["hybrid_search"].root
    before = {p for p in root.rglob("*") if p.is_file()}
    data = noisy("PNG", (40 + len(name) % 50, 30))
    body, content_type = multipart([(name, data)])
    response = client.post("/api/images", data=body, content_type=content_type,
                           headers=bearer(api_token))
    assert response.status_code == 201, response.json
    (record,) = response.json["images"]
    sha = hashlib.sha256(data).hexdigest()
    assert record["filename"] == label
    assert stored_path(app, record["id"]) == Path("originals", sha[:2], f"{sha}.png")
    served = client.get(f"/images/{record['id']}/file")
    assert served.status_code == 200 and served.data == data
    new = {p.relative_to(root) for p in root.rglob("*") if p.is_file()} - {
        p.relative_to(root) for p in before}
    stored = [p for p in new if p.parts[0] == "originals"]
    assert stored == [Path("originals", sha[:2], f"{sha}.png")]
    # The same name on a bad file: the message names it by its clean label too.
    body, content_type = multipart([(name, b"not a photo")])
    refused = client.post("/api/images", data=body, content_type=content_type,
                          headers=bearer(api_token))
    assert refused.status_code == 400
    message = refused.json["error"]
    assert f"{label}: not an image" in message
    assert not any(ch in message for ch in "\x00\n\r\u202e\u200b")
    # And through the upload page.
    other = noisy("PNG", (30, 40 + len(name) % 50))
    body, content_type = multipart([(name, other)],
                                   csrf_token=csrf_token(admin_client, "/upload"))
    page = admin_client.post("/upload", data=body, content_type=content_type)
    assert page.status_code == 303, page.get_data(as_text=True)[:500]
    new_id = int(page.headers["Location"].rsplit("/", 1)[-1])
    assert app.extensions["hybrid_search"].get(new_id).filename == label


def test_ingested_file_names_with_control_characters_are_served(
    data_dir: Path, tmp_path: Path, make_app: Callable[..., Flask]
) -> None:
    """A file on disk may be called anything but '/' and NUL; serving it must not fail."""
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "line\nbreak\u202egnp.png").write_bytes(noisy("PNG", (33, 22)))
    with Collection(settings_for(data_dir)) as collection:
        ((_, image_id),) = ingest(collection, [folder]).added
    client = make_app(data_dir).test_client()
    served = client.get(f"/images/{image_id}/file")
    assert served.status_code == 200 and served.mimetype == "image/png"
    disposition = served.headers["Content-Disposition"]
    assert "\n" not in disposition and "\u202e" not in disposition


def test_ingested_file_names_are_clean_labels(data_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "line\nbreak\u202egnp.png").write_bytes(noisy("PNG", (33, 22)))
    with Collection(settings_for(data_dir)) as collection:
        ((_, image_id),) = ingest(collection, [folder]).added
        assert collection.get(image_id).filename == "linebreakgnp.png"
