"""Shared fixtures: settings, the demo collection in temporary data directories, the web app.

The demo collection (12 annotated photos, real bundled model) is built once per test session
in `demo_data_dir`; a test that writes takes its own copy (`data_dir`). Every path a test
writes lies under pytest's temporary directories.
"""

from __future__ import annotations

import re
import shutil
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from hybrid_search.collection import Collection
from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
from hybrid_search.ingest import ingest
from hybrid_search.settings import Settings, load_settings

ADMIN_PASSWORD = "correct horse battery staple"
# A fast hash for tests only; the app itself uses werkzeug's slow default.
FAST_HASH = "pbkdf2:sha256:1000"
_CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def settings_for(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for a data directory, isolated from the environment and user config files."""
    return load_settings(data_dir=data_dir, env={}, overrides=overrides)


@pytest.fixture(scope="session")
def demo_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the demo collection, built once; copy it before changing it."""
    from hybrid_search.web.accounts import Accounts

    data = tmp_path_factory.mktemp("demo-data")
    with Collection(settings_for(data)) as collection:
        report = ingest(collection, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
    assert len(report.added) == 12 and not report.failed, report.to_dict()
    Accounts(data).set_password(ADMIN_PASSWORD, method=FAST_HASH)
    return data


@pytest.fixture
def data_dir(demo_data_dir: Path, tmp_path: Path) -> Path:
    """This test's own copy of the demo data directory."""
    target = tmp_path / "data"
    shutil.copytree(demo_data_dir, target)
    return target


class BufferedClient(FlaskClient):
    """A test client that reads every response whole, so file responses are closed at once."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@pytest.fixture
def make_app() -> Iterator[Callable[..., Flask]]:
    """A factory of web apps, each over its own data directory, closed after the test.

    `make_app(data_dir, settings={...}, **config)`: `settings` overrides core settings,
    `config` Flask config and web options (upper-case names).
    """
    from hybrid_search.web import create_app

    apps: list[Flask] = []

    def make(data_dir: Path, settings: dict[str, Any] | None = None, **config: Any) -> Flask:
        app = create_app({"TESTING": True, "SECRET_KEY": "test secret key", **config},
                         settings=settings_for(data_dir, **(settings or {})))
        app.test_client_class = BufferedClient
        apps.append(app)
        return app

    yield make
    for app in apps:
        app.extensions["hybrid_search"].close()


@pytest.fixture
def app(make_app: Callable[..., Flask], data_dir: Path) -> Flask:
    """The web app over a private copy of the demo collection."""
    return make_app(data_dir)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """An anonymous browser."""
    return app.test_client()


def csrf_token(client: FlaskClient, path: str = "/login") -> str:
    """The CSRF token of the client's session, read from a page's form."""
    html = client.get(path).get_data(as_text=True)
    match = _CSRF_RE.search(html)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


def sign_in(client: FlaskClient, password: str = ADMIN_PASSWORD) -> None:
    """Sign a test client in through the form."""
    response = client.post("/login", data={"password": password,
                                           "csrf_token": csrf_token(client)})
    assert response.status_code == 303, response.get_data(as_text=True)


@pytest.fixture
def admin_client(app: Flask) -> FlaskClient:
    """A browser signed in as the admin."""
    client = app.test_client()
    sign_in(client)
    return client


@pytest.fixture
def api_token(app: Flask) -> str:
    """A valid API token for the app."""
    secret, _ = app.extensions["hybrid_search.web"].accounts.create_token("tests")
    return secret


@contextmanager
def live_server(app: Flask, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve `app` with waitress on a free port in a background thread; yields the base URL.

    On exit the server stops and closes every socket it holds, open keep-alive connections
    included, and its worker threads end: nothing is left for the garbage collector to warn
    about.
    """
    from waitress import create_server, wasyncore

    server = create_server(app, host=host, port=0, threads=8)
    stop = threading.Event()

    def run() -> None:
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=server._map, count=1)
        for channel in list(server._map.values()):
            channel.close()
        server.task_dispatcher.shutdown(timeout=5)

    thread = threading.Thread(target=run, name="live-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.effective_port}"
    finally:
        stop.set()
        thread.join(timeout=10)
