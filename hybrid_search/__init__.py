"""hybrid-search: find photos by what is written about them, by what they look like, or both."""

from __future__ import annotations

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

__all__ = [
    "AnnotationError",
    "ConfigError",
    "HybridSearchError",
    "ImageDecodeError",
    "ModelUnavailableError",
    "NotFoundError",
    "QueryError",
    "StorageError",
    "__version__",
]
