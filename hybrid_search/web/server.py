"""Running the app under waitress, the production WSGI server (`hybrid-search serve`)."""

from __future__ import annotations

import sys
from typing import Any

from flask import Flask
from waitress import create_server

from ..exceptions import ConfigError
from ..settings import Settings
from .app import create_app
from .state import COLLECTION_KEY

__all__ = ["make_server", "serve", "server_url"]


def server_url(host: str, port: int) -> str:
    """The address people type into a browser."""
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


def make_server(settings: Settings, app: Flask | None = None, **options: Any) -> Any:
    """A waitress server bound to the settings' host and port (port 0: any free port).

    Opening the collection happens here, before the socket is bound, so a broken data
    directory is reported at once rather than on the first request.
    """
    app = app if app is not None else create_app(settings=settings)
    config = {
        "host": str(settings.host),
        "port": int(settings.port),
        "threads": int(app.config["SERVER_THREADS"]),
        "ident": "hybrid-search",
        "clear_untrusted_proxy_headers": True,
    }
    if app.config["TRUSTED_PROXY"]:
        config.update(
            trusted_proxy=app.config["TRUSTED_PROXY"],
            trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"},
        )
    config.update(options)
    try:
        return create_server(app, **config)
    except OSError as e:
        app.extensions[COLLECTION_KEY].close()
        raise ConfigError(f"cannot listen on {config['host']}:{config['port']}: "
                          f"{e.strerror or e}") from None


def startup_check(collection: Any) -> list[str]:
    """The quick data-directory check the server runs at start, as lines to show."""
    from ..check import check

    problems = check(collection, quick=True)
    if not problems:
        return ["quick check: database, text index, vectors and files agree"]
    lines = [f"quick check found {len(problems)} problem(s):"]
    lines += [f"  {p}" for p in problems[:20]]
    lines.append("run `hybrid-search check --repair` to fix what can be fixed")
    return lines


def serve(settings: Settings) -> None:
    """Serve the search page and the API until interrupted."""
    app = create_app(settings=settings)
    server = make_server(settings, app)
    collection = app.extensions[COLLECTION_KEY]
    count = collection.store.count()
    print(f"hybrid-search: {count} photo{'s' if count != 1 else ''} in {collection.root}",
          file=sys.stderr)
    for line in startup_check(collection):
        print(f"hybrid-search: {line}", file=sys.stderr)
    print(f"hybrid-search: serving on {server_url(str(settings.host), server.effective_port)}"
          "  (Ctrl+C to stop)", file=sys.stderr, flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
        collection.close()
