"""Query latency at scale: text only, image only (stored vector) and hybrid, p50 and p95.

    python bench/query_latency.py [--images 100000] [--queries 300] [--dir /tmp/hs-bench-100k]

Builds (once; reused when present) a collection of synthetic images: random unit 1280-d
vectors stored in SQLite like real ones, and annotation texts drawn from a Zipf-Mandelbrot
distributed vocabulary of pronounceable words (p(rank) ~ 1/(rank + 100): the head is flat,
as in real annotations once stop words are removed; the most common word is in about 7% of
the photos), indexed by the real Whoosh index. Then times `search()`
in-process, as the CLI and web app call it, and reports the vector matrix's memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

from hybrid_search.collection import SEMANTIC_MODEL, Collection
from hybrid_search.embedding import l2_normalize
from hybrid_search.search import SearchRequest, search
from hybrid_search.settings import load_settings
from hybrid_search.storage import NewImage

MODEL = "efficientnet-lite0"
DIM = 1280


def vocabulary(rng: np.random.Generator, size: int = 8000) -> list[str]:
    """Pronounceable made-up words, unique."""
    cons, vows = "bcdfghklmnprstvz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < size:
        n = rng.integers(2, 4)
        words.setdefault("".join(rng.choice(list(cons)) + rng.choice(list(vows))
                                 for _ in range(n)), None)
    return list(words)


def word_probabilities(n: int) -> np.ndarray:
    """Zipf-Mandelbrot word frequencies, p(rank) ~ 1 / (rank + 100)."""
    p = 1.0 / (np.arange(1, n + 1) + 100.0)
    return p / p.sum()


def build(path: Path, n: int, rng: np.random.Generator) -> list[str]:
    vocab = vocabulary(rng)
    p = word_probabilities(len(vocab))
    settings = load_settings(data_dir=path, env={})
    col = Collection(settings)
    visual = col.visual_model_id
    if col.store.count() >= n:
        col.close()
        return vocab
    start = time.perf_counter()
    chunk = 2000
    for base in range(col.store.count(), n, chunk):
        m = min(chunk, n - base)
        vecs = l2_normalize(rng.normal(size=(m, DIM)).astype(np.float32))
        # Stand-ins for the zero-shot and meaning vectors (384-d, MiniLM space).
        small = l2_normalize(rng.normal(size=(m, 2, 384)).astype(np.float32))
        items = []
        for j in range(m):
            words = rng.choice(vocab, size=30, p=p)
            unannotated = rng.random() < 0.2  # a fifth of the photos have no words
            items.append(NewImage(
                sha256=hashlib.sha256(f"synthetic-{base + j}".encode()).hexdigest(),
                path=f"/synthetic/{base + j}.jpg", filename=f"{base + j}.jpg", format="JPEG",
                width=640, height=480, bytes=100_000,
                title="" if unannotated else " ".join(words[:4]),
                description="" if unannotated else " ".join(words[4:22]),
                tags=() if unannotated else tuple(words[22:28]),
                model=MODEL, vector=vecs[j], norm=20.0,
                extra_vectors=((visual, small[j, 0], 1.0),) + (
                    () if unannotated else ((SEMANTIC_MODEL, small[j, 1], 1.0),)),
            ))
        col.store.add_images(items)
        print(f"stored {base + m}/{n}", file=sys.stderr)
    print(f"database built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    start = time.perf_counter()
    col.reindex()
    print(f"Whoosh index built in {time.perf_counter() - start:.0f} s", file=sys.stderr)
    col.close()
    return vocab


def percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
            "mean_ms": round(float(a.mean()), 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/hs-bench-100k-zm"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    vocab = build(args.dir, args.images, rng)
    p = word_probabilities(len(vocab))

    out: dict[str, object] = {}
    configs = {
        # Issue 2's engine: keywords (Whoosh) and image vectors only.
        "keywords_and_image": {"semantic": False, "zero_shot": False},
        # The default: keywords + annotation meaning + zero-shot for words, and the image.
        "default_all_signals": {},
    }
    for config, overrides in configs.items():
        out[config] = measure(args, vocab, p, overrides)
    print(json.dumps(out, indent=2))


def measure(args: argparse.Namespace, vocab: list[str], p: np.ndarray,
            overrides: dict[str, object]) -> dict[str, object]:
    rng = np.random.default_rng(1)
    col = Collection(load_settings(data_dir=args.dir, env={}, overrides=overrides))
    start = time.perf_counter()
    vectors = col.vectors
    load_s = time.perf_counter() - start
    col.unannotated_ids()
    if col.settings.zero_shot or col.settings.semantic:
        for model in (col.visual_model_id, SEMANTIC_MODEL):
            col.vector_index(model)
        col.semantic_query(["warm up the text model"])
    ids = vectors.ids()
    texts = [" ".join(rng.choice(vocab, size=int(rng.integers(1, 4)), p=p))
             for _ in range(args.queries)]
    likes = [int(i) for i in rng.choice(ids, size=args.queries)]
    kinds = {
        "text": [SearchRequest(text=t) for t in texts],
        "image": [SearchRequest(image_id=i) for i in likes],
        "hybrid": [SearchRequest(text=t, image_id=i) for t, i in zip(texts, likes, strict=True)],
    }
    for reqs in kinds.values():  # warm-up: caches, searcher, page cache
        for r in reqs[:10]:
            search(col, r)
    out: dict[str, object] = {"images": col.store.count()}
    for name, reqs in kinds.items():
        times = []
        for r in reqs:
            col._query_cache.clear()  # every query is new: its words are encoded again
            t = time.perf_counter()
            search(col, r)
            times.append((time.perf_counter() - t) * 1000)
        out[name] = percentiles(times)
    # Where the time goes, for one hybrid query (the search() timings dictionary).
    col._query_cache.clear()
    out["hybrid_breakdown_ms"] = search(col, kinds["hybrid"][0]).timings_ms
    out["vector_matrix_mb"] = round(vectors.nbytes / 2**20, 1)
    out["all_matrices_mb"] = round(sum(ix.nbytes for ix in col._indexes.values()) / 2**20, 1)
    out["vector_matrix_load_s"] = round(load_s, 2)
    out["max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out["goals_ms_p50"] = {"text": 20, "image": 30, "hybrid": 50}
    col.close()
    return out


if __name__ == "__main__":
    main()
