"""The web layer: the search page and the JSON API over the core (`create_app`)."""

from __future__ import annotations

from .app import create_app

__all__ = ["create_app"]
