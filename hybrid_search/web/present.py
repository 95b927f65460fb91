"""How records and hits are shown: their URLs, score bars, and JSON without server paths.

Server paths (`ImageRecord.path`) never leave this layer: images are addressed by id only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from flask import url_for

from ..search import SearchHit, SearchResponse
from ..storage import ImageRecord

__all__ = ["Bar", "hit_bars", "hit_json", "image_urls", "record_json", "scores_tooltip"]

HIDDEN_FIELDS = ("path",)
# The signals that judge the query's words; the image signal judges a query photo.
WORD_SIGNALS = ("text", "semantic", "visual")
SIGNAL_NAMES = {
    "text": "keywords (BM25F)",
    "semantic": "meaning of the words",
    "visual": "words against what the photo shows",
    "image": "looks",
}


def image_urls(record: ImageRecord, *, external: bool = False) -> dict[str, str]:
    """Where a client finds an image: its file, thumbnail and page."""
    version = record.sha256[:12]
    return {
        "image_url": url_for("images.file", image_id=record.id, v=version, _external=external),
        "thumbnail_url": url_for("images.thumb", image_id=record.id, v=version,
                                 _external=external),
        "page_url": url_for("pages.image", image_id=record.id, _external=external),
    }


def record_json(record: ImageRecord) -> dict[str, Any]:
    """An image as JSON: its fields (no server path) and URLs."""
    out = record.to_dict()
    for name in HIDDEN_FIELDS:
        out.pop(name, None)
    out.update(image_urls(record))
    return out


def hit_json(hit: SearchHit) -> dict[str, Any]:
    """A search result as JSON: rank, scores, fields (no server path) and URLs."""
    out = hit.to_dict()
    for name in HIDDEN_FIELDS:
        out.pop(name, None)
    out.update(image_urls(hit.record))
    return out


@dataclass(frozen=True)
class Bar:
    """One score bar: a label, a width from 0 to 1 (None: no such score) and its raw value."""

    name: str
    label: str
    width: float | None
    raw: float | None


def _width(value: float | None, response: SearchResponse, rrf_k: int) -> float | None:
    """A normalised or fused score as a bar width from 0 to 1."""
    if value is None or not math.isfinite(value):
        return None
    if response.fusion == "rrf":
        value *= rrf_k + 1  # 1/(k + 1), the score of a first place, fills the bar
    elif response.normalization == "zscore":
        value = 1.0 / (1.0 + math.exp(-value))
    return min(1.0, max(0.0, value))


def _words_score(hit: SearchHit, response: SearchResponse) -> float | None:
    """The word side's normalised score: its signals' weighted mean, as fusion weighs them."""
    weights = getattr(response, "weights", None) or {}
    total = weight = 0.0
    for name in WORD_SIGNALS:
        value = hit.normalized.get(name)
        if name not in response.signals or value is None:
            continue
        w = float(weights.get(name, 1.0))
        total += w * value
        weight += w
    return total / weight if weight > 0 else None


def hit_bars(hit: SearchHit, response: SearchResponse, rrf_k: int) -> list[Bar]:
    """The bars of one result: its words' score, its looks' score, and the fused score."""
    bars = []
    if any(name in response.signals for name in WORD_SIGNALS):
        bars.append(Bar("text", "Words", _width(_words_score(hit, response), response, rrf_k),
                        hit.signals.get("text")))
    if "image" in response.signals:
        bars.append(Bar("image", "Looks", _width(hit.normalized.get("image"), response, rrf_k),
                        hit.signals.get("image")))
    bars.append(Bar("fused", "Overall", _width(hit.score, response, rrf_k), hit.score))
    return bars


def scores_tooltip(hit: SearchHit, response: SearchResponse, metric: str) -> str:
    """Every raw score behind the bars, in words."""
    parts = []
    for name in response.signals:
        raw = hit.signals.get(name)
        label = SIGNAL_NAMES.get(name, name)
        if name == "image":
            label = f"looks ({metric})"
        parts.append(f"{label}: {'no match' if raw is None else f'{raw:.4g}'}")
    method = "reciprocal rank fusion" if response.fusion == "rrf" else "weighted"
    parts.append(f"overall ({method}): {hit.score:.4g}")
    return " · ".join(parts)
