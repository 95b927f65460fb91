"""Every error hybrid-search raises on purpose.

Core code raises these; the CLI and the web layer translate them into messages and status codes.

    HybridSearchError
    ├── ConfigError              a setting has a bad value, or a config file cannot be read
    ├── ImageDecodeError         a file is not an image we can read (broken, wrong format, too big)
    ├── AnnotationError          an annotation file or record is malformed
    ├── ModelUnavailableError    a configured model cannot be loaded (weights missing, bad name)
    ├── NotFoundError            an image id or path that the collection does not hold
    ├── QueryError               a search that cannot be answered (no words and no image, bad alpha)
    └── StorageError             the data directory or database is unusable
"""

from __future__ import annotations

__all__ = [
    "AnnotationError",
    "ConfigError",
    "HybridSearchError",
    "ImageDecodeError",
    "ModelUnavailableError",
    "NotFoundError",
    "QueryError",
    "StorageError",
]


class HybridSearchError(Exception):
    """Base class of every error raised on purpose by hybrid-search."""


class ConfigError(HybridSearchError):
    """A setting has a bad value, or a config file cannot be read."""


class ImageDecodeError(HybridSearchError):
    """A file is not an image that can be read; the message names the file and the reason."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


class AnnotationError(HybridSearchError):
    """An annotation file or record is malformed."""


class ModelUnavailableError(HybridSearchError):
    """A configured embedding model cannot be loaded."""


class NotFoundError(HybridSearchError):
    """An image id or path that the collection does not hold."""


class QueryError(HybridSearchError):
    """A search request that cannot be answered as given."""


class StorageError(HybridSearchError):
    """The data directory or the database is unusable."""
