"""What one app holds for its lifetime, and how views reach it."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app

from ..collection import Collection
from .accounts import Accounts
from .queries import QueryImages
from .security import RateLimiter

__all__ = ["COLLECTION_KEY", "STATE_KEY", "WebState", "get_collection", "web_state"]

COLLECTION_KEY = "hybrid_search"
STATE_KEY = "hybrid_search.web"


@dataclass
class WebState:
    """The web layer's long-lived objects (the collection lives beside it)."""

    accounts: Accounts
    queries: QueryImages
    login_limiter: RateLimiter


def get_collection() -> Collection:
    """The current app's open collection."""
    collection: Collection = current_app.extensions[COLLECTION_KEY]
    return collection


def web_state() -> WebState:
    """The current app's web state."""
    state: WebState = current_app.extensions[STATE_KEY]
    return state
