"""Score fusion: turn several ranked lists of (id, score) into one ranking.

Pure code over ids and scores. Each signal (text, image, ...) hands in its candidates, best
first, with raw scores (BM25F, cosine similarity). Normalisation maps each list to a common
scale, then fusion combines them with per-signal weights.

What a candidate absent from one signal's list gets:

* **Not applicable** (the signal cannot say anything about it: the photo has no annotations
  for the text signal, or no vector for the image signal): with a `prior` (linear min-max
  fusion; the search uses the setting `unannotated_prior`, 0.5 by default) the signal counts
  as that neutral "unknown" value; without one it is left out of that candidate's weighted
  mean, so its weight goes to the signals that can judge it. Either way an unannotated photo
  is not buried for having no words: it ranks above annotated photos whose words do not
  match. With the prior, a photo whose words do match still ranks above an unannotated photo
  that merely looks right, which leaving the signal out does not guarantee.
* **Applicable but not retrieved** (the photo has words, none of which match): the signal's
  floor, 0 after min-max or the list's lowest z-score, or no reciprocal-rank term. Words that
  do not match are evidence against the photo.

Min-max scales each list from its lowest to its highest score, except where a signal has a
natural floor: BM25 gives 0 to a document that matches no word, and its list holds only
matches, so text scores are scaled from 0. Otherwise the last of three nearly equal BM25
scores would become 0 and lose to any image score.

The fused score is the weighted mean over the applicable signals, so it stays on the scale
of the normalised scores (0..1 for min-max). With equal weights, RRF here is the classic
sum of 1/(k + rank) divided by the number of signals: the same order.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = [
    "FusedHit",
    "fuse",
    "linear_fusion",
    "minmax",
    "rrf",
    "zscore",
]

Ranked = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class FusedHit:
    """One fused result: its id, fused score, and each signal's raw and normalised score."""

    id: int
    score: float
    signals: dict[str, float | None] = field(default_factory=dict)
    normalized: dict[str, float | None] = field(default_factory=dict)


def minmax(hits: Ranked, lower: float | None = None) -> dict[int, float]:
    """Scale scores to 0..1; a single hit, or hits with equal scores, all get 1.

    `lower`, when given, is the score of a candidate that matched nothing (0 for BM25): the
    scale then starts there rather than at the list's lowest score, so two nearly equal
    scores are not stretched to 1 and 0.
    """
    if not hits:
        return {}
    scores = [s for _, s in hits]
    lo, hi = min(scores), max(scores)
    if lower is not None:
        lo = min(lo, lower)
    span = hi - lo
    if span <= 0 or not math.isfinite(span):
        return {i: 1.0 for i, _ in hits}
    return {i: (s - lo) / span for i, s in hits}


def zscore(hits: Ranked) -> dict[int, float]:
    """Standardise scores to mean 0, standard deviation 1; equal scores all get 0."""
    if not hits:
        return {}
    scores = [s for _, s in hits]
    mean = sum(scores) / len(scores)
    var = sum((s - mean) ** 2 for s in scores) / len(scores)
    std = math.sqrt(var)
    if std <= 0 or not math.isfinite(std):
        return {i: 0.0 for i, _ in hits}
    return {i: (s - mean) / std for i, s in hits}


def rrf(hits: Ranked, k: int = 60) -> dict[int, float]:
    """Reciprocal rank 1/(k + rank), rank counted from 1 in the order given."""
    if k < 1:
        raise ValueError("k must be >= 1")
    out: dict[int, float] = {}
    for rank, (i, _) in enumerate(hits, start=1):
        out.setdefault(i, 1.0 / (k + rank))
    return out


def linear_fusion(
    normalized: Mapping[str, Mapping[int, float]],
    weights: Mapping[str, float],
    floors: Mapping[str, float],
    not_applicable: Mapping[str, Collection[int]] | None = None,
    prior: float | None = None,
) -> dict[int, float]:
    """Weighted mean of normalised scores per id, over the signals applicable to that id.

    With a `prior`, a signal not applicable to an id counts as that neutral value instead of
    being left out of the mean.
    """
    not_applicable = not_applicable or {}
    ids: set[int] = set()
    for scores in normalized.values():
        ids.update(scores)
    fused: dict[int, float] = {}
    for i in ids:
        total = 0.0
        weight = 0.0
        for name, scores in normalized.items():
            w = weights.get(name, 0.0)
            if w <= 0:
                continue
            if i in not_applicable.get(name, ()):
                if prior is None:
                    continue
                total += w * prior
            else:
                total += w * scores.get(i, floors.get(name, 0.0))
            weight += w
        fused[i] = total / weight if weight > 0 else 0.0
    return fused


def fuse(
    ranked: Mapping[str, Ranked],
    weights: Mapping[str, float],
    method: str = "linear",
    normalization: str = "minmax",
    k: int = 60,
    not_applicable: Mapping[str, Collection[int]] | None = None,
    lower_bounds: Mapping[str, float] | None = None,
    prior: float | None = None,
) -> list[FusedHit]:
    """Fuse ranked lists into one list, best first, ties broken by id for a stable order.

    `lower_bounds` gives, per signal, the score of a candidate that matched nothing, used by
    min-max normalisation (see `minmax`).
    """
    if method not in ("linear", "rrf"):
        raise ValueError(f"unknown fusion method {method!r}")
    if normalization not in ("minmax", "zscore"):
        raise ValueError(f"unknown normalization {normalization!r}")
    for name, w in weights.items():
        if not (w >= 0 and math.isfinite(w)):
            raise ValueError(f"weight of {name} must be a finite number >= 0")
    not_applicable = not_applicable or {}
    active = {name: hits for name, hits in ranked.items() if weights.get(name, 0.0) > 0}
    normalized: dict[str, dict[int, float]] = {}
    floors: dict[str, float] = {}
    for name, hits in active.items():
        if method == "rrf":
            normalized[name] = rrf(hits, k)
            floors[name] = 0.0
        elif normalization == "minmax":
            normalized[name] = minmax(hits, (lower_bounds or {}).get(name))
            floors[name] = 0.0
        else:
            normalized[name] = zscore(hits)
            floors[name] = min(normalized[name].values(), default=0.0)
    fused = linear_fusion(normalized, weights, floors, not_applicable,
                          prior if method == "linear" and normalization == "minmax" else None)
    raw = {name: dict(hits) for name, hits in ranked.items()}
    out = []
    for i, score in fused.items():
        out.append(
            FusedHit(
                id=i,
                score=score,
                signals={name: raw[name].get(i) for name in ranked},
                normalized={
                    name: (
                        None
                        if i in not_applicable.get(name, ()) or name not in normalized
                        else normalized[name].get(i, floors[name])
                    )
                    for name in ranked
                },
            )
        )
    out.sort(key=lambda h: (-h.score, h.id))
    return out
