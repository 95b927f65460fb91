"""Answering a query: words, an image, or both, fused into one ranked page of results.

Each signal returns its best `max(candidates, offset + limit)` ids with raw scores:

* `text`: Whoosh, BM25F over the annotations (manual words and machine-made tags);
* `semantic`: the words' meaning (MiniLM) against each annotation's meaning;
* `visual`: the words against what each photo shows (ConSE, or CLIP's text tower);
* `image`: a query image (uploaded, or a stored one) against the image vectors.

The words' side shares `1 - alpha` in proportion to the settings `weight_text`,
`weight_semantic` and `weight_visual`; the image side gets `alpha`. `fusion.fuse` turns the
lists into one ranking (see its docstring for what an image missing from one list gets), and
the database loads the page's rows in rank order.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from .collection import SEMANTIC_MODEL, Collection
from .decode import decode_image
from .exceptions import QueryError
from .fusion import FusedHit, fuse
from .spelling import edit_distance
from .storage import ImageRecord
from .vectors import top_k

__all__ = ["Ranking", "SearchHit", "SearchRequest", "SearchResponse", "rank", "search"]

SIGNALS = ("text", "semantic", "visual", "image")
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
    corrected_query: str | None = None
    suggestion: str | None = None
    weights: dict[str, float] = field(default_factory=dict)

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
            "weights": self.weights,
            "corrected_query": self.corrected_query,
            "suggestion": self.suggestion,
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


def _text_side_weights(collection: Collection, present: list[str]) -> dict[str, float]:
    s = collection.settings
    raw = {"text": s.weight_text, "semantic": s.weight_semantic, "visual": s.weight_visual}
    return {name: float(raw[name]) for name in present}


@dataclass
class Ranking:
    """The whole fused ranking of a query, before any row is loaded."""

    fused: list[FusedHit]
    ranked: dict[str, list[tuple[int, float]]]
    all_scores: dict[str, tuple[np.ndarray, np.ndarray]]
    weights: dict[str, float]
    alpha: float
    method: str
    normalization: str
    limit: int
    offset: int
    corrected: str | None
    suggestion: str | None
    timings: dict[str, float]


def search(collection: Collection, req: SearchRequest) -> SearchResponse:
    """Run one query against the collection and load the requested page."""
    t0 = time.perf_counter()
    r = rank(collection, req)
    t = time.perf_counter()
    page = r.fused[r.offset : r.offset + r.limit]
    records = {rec.id: rec for rec in collection.store.get_many([h.id for h in page])}
    lookups = {name: _score_lookup(sc, [h.id for h in page]) for name, sc in r.all_scores.items()}
    hits_out = []
    for n, h in enumerate(page):
        rec = records.get(h.id)
        if rec is None:  # removed between the index read and the row read
            continue
        signals = {name: h.signals.get(name) for name in SIGNALS}
        for name, lookup in lookups.items():
            if signals[name] is None:
                signals[name] = lookup.get(h.id)
        hits_out.append(
            SearchHit(
                rank=r.offset + n + 1,
                record=rec,
                score=h.score,
                signals=signals,
                normalized={name: h.normalized.get(name) for name in SIGNALS},
            )
        )
    timings = dict(r.timings)
    timings["load"] = (time.perf_counter() - t) * 1000
    timings["total"] = (time.perf_counter() - t0) * 1000
    return SearchResponse(
        hits=hits_out,
        total=len(r.fused),
        offset=r.offset,
        limit=r.limit,
        alpha=r.alpha,
        fusion=r.method,
        normalization=r.normalization,
        signals=list(r.ranked),
        timings_ms={k2: round(v, 3) for k2, v in timings.items()},
        corrected_query=r.corrected,
        suggestion=r.suggestion,
        weights={n: round(w, 4) for n, w in r.weights.items()},
    )


def rank(collection: Collection, req: SearchRequest) -> Ranking:
    """Every signal's candidates for a query, fused into one ranking (no rows loaded)."""
    collection.refresh()
    settings = collection.settings
    alpha, method, norm, limit, offset = _validated(collection, req)
    text = (req.text or "").strip()
    if not text and req.image_bytes is None and req.image_id is None:
        raise QueryError("give search words, a query image, or both")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise QueryError("the search words contain characters that are not valid text") from None
    k = max(int(settings.candidates), offset + limit)
    timings: dict[str, float] = {}
    ranked: dict[str, list[tuple[int, float]]] = {}
    not_applicable: dict[str, set[int]] = {}
    all_scores: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    corrected: str | None = None
    suggestion: str | None = None

    if text:
        t = time.perf_counter()
        hits = collection.text.search(text, k)
        # Spelling help only when the words found little: correct() is cheap once its word
        # list is cached, but rebuilding that list after a write costs up to a second at 100k.
        correction = collection.text.correct(text) if len(hits) < limit else None
        if correction is not None:
            if not hits and settings.autocorrect and _confident(correction.replacements):
                corrected = correction.corrected
                hits = collection.text.search(corrected, k)
            else:
                suggestion = correction.corrected
        ranked["text"] = hits
        # A photo with no words of its own is not judged by words. Its machine-made tags are
        # searchable (`auto:word`, and they show as keyword matches), but in the fused ranking
        # the zero-shot signal already speaks for the same CNN predictions, so counting them
        # again would only add noise: on Flickr8k with no annotations it cost 0.01 R@10.
        unannotated = collection.unannotated_ids()
        not_applicable["text"] = unannotated
        timings["text"] = (time.perf_counter() - t) * 1000
        # Meaning and looks use the words as typed: a sentence embedding copes with a typo
        # better than with a wrong correction, which only the keyword side needs.
        words = text
        if settings.semantic:
            t = time.perf_counter()
            q = collection.semantic_query([words])[0]
            scores = collection.vector_index(SEMANTIC_MODEL).scores(q)
            ranked["semantic"] = top_k(*scores, k)
            not_applicable["semantic"] = unannotated
            timings["semantic"] = (time.perf_counter() - t) * 1000
        visual = collection.visual_model_id
        if visual is not None:
            t = time.perf_counter()
            q = collection.visual_query([words])[0]
            all_scores["visual"] = collection.vector_index(visual).scores(q)
            ranked["visual"] = top_k(*all_scores["visual"], k)
            timings["visual"] = (time.perf_counter() - t) * 1000

    qv = query_vector(collection, req) if (req.image_bytes or req.image_id is not None) else None
    if qv is not None:
        t = time.perf_counter()
        vec, qnorm = qv
        all_scores["image"] = collection.vectors.scores(vec, str(settings.metric), qnorm)
        exclude = [req.image_id] if req.image_id is not None else []
        ranked["image"] = top_k(*all_scores["image"], k, exclude=exclude)
        timings["image"] = (time.perf_counter() - t) * 1000

    t = time.perf_counter()
    text_side = [name for name in ("text", "semantic", "visual") if name in ranked]
    weights = _text_side_weights(collection, text_side)
    total_text = sum(weights.values())
    if "image" in ranked:
        if total_text > 0:
            weights = {n: (1.0 - alpha) * w / total_text for n, w in weights.items()}
            weights["image"] = alpha
        else:
            weights = {"image": 1.0}
    fused = fuse(ranked, weights, method=method, normalization=norm,
                 k=int(settings.rrf_k), not_applicable=not_applicable,
                 lower_bounds={"text": 0.0},
                 prior=_prior(settings.unannotated_prior))
    if req.image_id is not None:
        fused = [h for h in fused if h.id != req.image_id]
    timings["fuse"] = (time.perf_counter() - t) * 1000
    return Ranking(
        fused=fused, ranked=ranked, all_scores=all_scores, weights=weights, alpha=alpha,
        method=method, normalization=norm, limit=limit, offset=offset, corrected=corrected,
        suggestion=suggestion, timings=timings,
    )


def _prior(value: float) -> float | None:
    """The unannotated_prior setting: None (leave the signal out) when negative."""
    return None if value < 0 else float(value)


AUTOCORRECT_MAX_EDIT_RATIO = 0.25


def _confident(replacements: dict[str, str]) -> bool:
    """Whether every replacement is small enough to apply unasked ("cofee" → "coffee").

    Bigger jumps ("cat" → "coat", "resting" → "retina") are only offered as "did you mean".
    """
    return bool(replacements) and all(
        edit_distance(old.lower(), new.lower()) <= AUTOCORRECT_MAX_EDIT_RATIO * len(old)
        for old, new in replacements.items()
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
