"""hybrid-search: find photos by what is written about them, by what they look like, or both.

The main classes are re-exported here and imported on first use, so `import hybrid_search`
stays light (no database, index or model code runs at import time). The functions of the same
name as their module live there::

    from hybrid_search import Collection, SearchRequest, load_settings
    from hybrid_search.ingest import ingest
    from hybrid_search.search import search

    col = Collection(load_settings(data_dir="data"))
    ingest(col, ["photos/"])
    hits = search(col, SearchRequest(text="red car", limit=10)).hits
"""

from __future__ import annotations

import importlib
from typing import Any

from .exceptions import (
    AnnotationError,
    ConfigError,
    HybridSearchError,
    ImageDecodeError,
    ModelUnavailableError,
    NotFoundError,
    QueryError,
    StorageError,
)

__version__ = "0.1.0"

_LAZY = {
    "Collection": "collection",
    "SearchRequest": "search",
    "SearchResponse": "search",
    "load_settings": "settings",
    "Settings": "settings",
    "fuse": "fusion",
    "repair": "check",
}

__all__ = [
    "AnnotationError",
    "Collection",
    "ConfigError",
    "HybridSearchError",
    "ImageDecodeError",
    "ModelUnavailableError",
    "NotFoundError",
    "QueryError",
    "SearchRequest",
    "SearchResponse",
    "Settings",
    "StorageError",
    "__version__",
    "fuse",
    "load_settings",
    "repair",
]


def __getattr__(name: str) -> Any:
    """Import a re-exported name from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hybrid_search' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value
