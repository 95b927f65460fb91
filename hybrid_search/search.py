"""Answering a query: words, an image, or both, fused into one ranked page of results.

Each signal returns its best `max(candidates, offset + limit)` ids with raw scores: the text
signal from Whoosh (BM25F), the image signal from exact nearest neighbours over the vector
matrix. `fusion.fuse` turns them into one ranking (see its docstring for what an image
missing from one list gets), and the database loads the page's rows in rank order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .collection import Collection
from .decode import decode_image
from .exceptions import QueryError
from .fusion import fuse
from .storage import ImageRecord
from .vectors import top_k

__all__ = ["SearchHit", "SearchRequest", "SearchResponse", "search"]

SIGNALS = ("text", "image")
MAX_LIMIT = 1000
MAX_OFFSET = 100_000


@dataclass(frozen=True)
class SearchRequest:
    """One query. Give `text`, an image (`image_bytes` or a stored `image_id`), or both."""

    text: str | None = None
    image_bytes: bytes | None = None
    image_name: str = "query image"
    image_id: int | None = None
    alpha: float | None = None
    fusion: str | None = None
    normalization: str | None = None
    limit: int | None = None
    offset: int = 0


@dataclass(frozen=True)
class SearchHit:
    """One ranked result."""

    rank: int
    record: ImageRecord
    score: float
    signals: dict[str, float | None]
    normalized: dict[str, float | None]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        r = self.record
        return {
            "rank": self.rank,
            "id": r.id,
            "path": r.path,
            "filename": r.filename,
            "title": r.title,
            "description": r.description,
            "tags": list(r.tags),
            "width": r.width,
            "height": r.height,
            "score": self.score,
            "signals": self.signals,
            "normalized": self.normalized,
        }


@dataclass
class SearchResponse:
    """A page of results and how it was made."""

    hits: list[SearchHit]
    total: int
    offset: int
    limit: int
    alpha: float
    fusion: str
    normalization: str
    signals: list[str]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "results": [h.to_dict() for h in self.hits],
            "total": self.total,
            "offset": self.offset,
            "limit": self.limit,
            "alpha": self.alpha,
            "fusion": self.fusion,
            "normalization": self.normalization,
            "signals": self.signals,
            "timings_ms": self.timings_ms,
        }


def _validated(collection: Collection, req: SearchRequest) -> tuple[float, str, str, int, int]:
    s = collection.settings
    alpha = s.alpha if req.alpha is None else req.alpha
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        raise QueryError(f"alpha must be a number between 0 and 1, not {req.alpha!r}") from None
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise QueryError(f"alpha must be between 0 and 1, not {alpha}")
    method = req.fusion or s.fusion
    if method not in ("linear", "rrf"):
        raise QueryError(f"fusion must be 'linear' or 'rrf', not {method!r}")
    norm = req.normalization or s.normalization
    if norm not in ("minmax", "zscore"):
        raise QueryError(f"normalization must be 'minmax' or 'zscore', not {norm!r}")
    limit = s.limit if req.limit is None else req.limit
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit!r}")
    offset = req.offset
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= MAX_OFFSET:
        raise QueryError(f"offset must be a whole number from 0 to {MAX_OFFSET}, not {offset!r}")
    return alpha, method, norm, limit, offset


def query_vector(collection: Collection, req: SearchRequest) -> tuple[np.ndarray, float] | None:
    """The query image's unit vector and raw norm, from uploaded bytes or a stored image."""
    if req.image_bytes is not None:
        decoded = decode_image(
            req.image_bytes, name=req.image_name, max_pixels=collection.settings.max_image_pixels
        )
        embedder = collection.embedder
        vecs, norms = embedder.encode_arrays_with_norms(
            embedder.preprocess(decoded.image)[None, ...]
        )
        return vecs[0], float(norms[0])
    if req.image_id is not None:
        return collection.image_vector(req.image_id)
    return None


def search(collection: Collection, req: SearchRequest) -> SearchResponse:
    """Run one query against the collection."""
    t0 = time.perf_counter()
    alpha, method, norm, limit, offset = _validated(collection, req)
    text = (req.text or "").strip()
    if not text and req.image_bytes is None and req.image_id is None:
        raise QueryError("give search words, a query image, or both")
    k = max(int(collection.settings.candidates), offset + limit)
    timings: dict[str, float] = {}
    ranked: dict[str, list[tuple[int, float]]] = {}
    not_applicable: dict[str, set[int]] = {}
    all_scores: tuple[np.ndarray, np.ndarray] | None = None

    if text:
        t = time.perf_counter()
        ranked["text"] = collection.text.search(text, k)
        not_applicable["text"] = collection.unannotated_ids()
        timings["text"] = (time.perf_counter() - t) * 1000

    qv = query_vector(collection, req) if (req.image_bytes or req.image_id is not None) else None
    if qv is not None:
        t = time.perf_counter()
        vec, qnorm = qv
        metric = str(collection.settings.metric)
        vectors = collection.vectors
        all_scores = vectors.scores(vec, metric, qnorm)
        exclude = [req.image_id] if req.image_id is not None else []
        ranked["image"] = top_k(*all_scores, k, exclude=exclude)
        timings["image"] = (time.perf_counter() - t) * 1000

    t = time.perf_counter()
    if len(ranked) == 1:
        weights = {name: 1.0 for name in ranked}
    else:
        weights = {"text": 1.0 - alpha, "image": alpha}
    fused = fuse(ranked, weights, method=method, normalization=norm,
                 k=int(collection.settings.rrf_k), not_applicable=not_applicable,
                 lower_bounds={"text": 0.0})
    if req.image_id is not None:
        fused = [h for h in fused if h.id != req.image_id]
    page = fused[offset : offset + limit]
    records = {r.id: r for r in collection.store.get_many([h.id for h in page])}
    image_lookup = _score_lookup(all_scores, [h.id for h in page])
    hits = []
    for n, h in enumerate(page):
        rec = records.get(h.id)
        if rec is None:  # removed between the index read and the row read
            continue
        signals = {name: h.signals.get(name) for name in SIGNALS}
        if "image" in ranked and signals["image"] is None:
            signals["image"] = image_lookup.get(h.id)
        hits.append(
            SearchHit(
                rank=offset + n + 1,
                record=rec,
                score=h.score,
                signals=signals,
                normalized={name: h.normalized.get(name) for name in SIGNALS},
            )
        )
    timings["fuse_and_load"] = (time.perf_counter() - t) * 1000
    timings["total"] = (time.perf_counter() - t0) * 1000
    return SearchResponse(
        hits=hits,
        total=len(fused),
        offset=offset,
        limit=limit,
        alpha=alpha,
        fusion=method,
        normalization=norm,
        signals=list(ranked),
        timings_ms={k2: round(v, 3) for k2, v in timings.items()},
    )


def _score_lookup(
    all_scores: tuple[np.ndarray, np.ndarray] | None, ids: list[int]
) -> dict[int, float]:
    """Raw image scores of specific ids, for results that came from the text list only."""
    if all_scores is None or not ids:
        return {}
    row_ids, scores = all_scores
    want = np.asarray(ids, dtype=np.int64)
    mask = np.isin(row_ids, want)
    return {int(i): float(s) for i, s in zip(row_ids[mask], scores[mask], strict=True)}
