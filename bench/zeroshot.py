"""Zero-shot text→image on Flickr8k photos with no annotations: ConSE variants, R@1/5/10, MRR.

    python bench/zeroshot.py [--data ../shared/data/flickr8k] [--cache /tmp/hs-zeroshot]
                             [--grid] [--crops] [--json results.json]

Each caption is a query whose one relevant photo is its own; every query ranks all 500 photos.
Queries are split by photo: captions of the first 150 photos in sorted file order are the
development split (all choices were tuned there), the other 350 photos' captions are held out.
Numbers are printed for dev, held-out and all 2500 captions.

The CNN's logits for the photos and MiniLM's caption embeddings are computed once and cached
(as .npy) in --cache, and so are the label matrices. --grid sweeps top_k x temperature x ridge
on the dev split; --crops adds a variant that also runs the CNN on five crops of each photo (an
ingest change, not the default; the first run costs about 6 CNN passes per photo).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from hybrid_search.decode import read_image_file  # noqa: E402
from hybrid_search.embedding import EfficientNetLite0  # noqa: E402
from hybrid_search.text_embedding import get_text_embedder  # noqa: E402
from hybrid_search.zeroshot import (  # noqa: E402
    DEFAULT_CONSE,
    ConSE,
    ConSEParams,
    label_texts,
    ridge_decoder,
    softmax,
)

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
DEV_PHOTOS = 150

BASELINE = ConSEParams(top_k=10, temperature=1.0, label_text="class", centre=False)
# The default before the ridge decoding (step 7 of docs/zeroshot.md).
PREVIOUS = ConSEParams(top_k=1000, temperature=3.0, label_text="prompt+gloss", centre=True)


def load_captions(root: Path) -> tuple[list[str], list[str], np.ndarray]:
    """Sorted photo files, captions, and each caption's photo index."""
    with open(root / "captions.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    files = sorted({r["file"] for r in rows})
    index = {name: i for i, name in enumerate(files)}
    return files, [r["caption"] for r in rows], np.array([index[r["file"]] for r in rows])


def cached(path: Path, compute) -> np.ndarray:  # type: ignore[no-untyped-def]
    if path.exists():
        return np.load(path)
    arr = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, arr)
    return arr


def photo_logits(root: Path, files: list[str], crops: bool = False) -> np.ndarray:
    """(n, 1000) logits of whole photos, or (n, 5, 1000) of four corner crops and the centre."""
    cnn = EfficientNetLite0()
    out = []
    for start in range(0, len(files), 25):
        batch = []
        for name in files[start:start + 25]:
            image = read_image_file(root / name)[1].image
            if not crops:
                batch.append(cnn.preprocess(image))
                continue
            w, h = image.size
            for x0, y0 in ((0, 0), (0.4, 0), (0, 0.4), (0.4, 0.4), (0.2, 0.2)):
                box = (int(x0 * w), int(y0 * h), int((x0 + 0.6) * w), int((y0 + 0.6) * h))
                batch.append(cnn.preprocess(image.crop(box)))
        logits = cnn.features_and_logits(np.stack(batch))[1]
        out.append(logits.reshape(-1, 5, 1000) if crops else logits)
    return np.concatenate(out)


def ranks(scores: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Each query's rank of its own photo; ties count against the query (pessimistic rank)."""
    own = scores[np.arange(len(scores)), target]
    return (scores >= own[:, None]).sum(axis=1)


def metrics(scores: np.ndarray, target: np.ndarray) -> dict[str, float]:
    rank = ranks(scores, target)
    return {
        "R@1": float((rank <= 1).mean()),
        "R@5": float((rank <= 5).mean()),
        "R@10": float((rank <= 10).mean()),
        "MRR": float((1.0 / rank).mean()),
        "queries": len(rank),
    }


def evaluate(images: np.ndarray, queries: np.ndarray, target: np.ndarray,
             dev: np.ndarray) -> dict[str, dict[str, float]]:
    scores = queries @ images.T
    return {
        "dev": metrics(scores[dev], target[dev]),
        "held-out": metrics(scores[~dev], target[~dev]),
        "all": metrics(scores, target),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--cache", type=Path, default=Path("/tmp/hs-zeroshot"))
    ap.add_argument("--grid", action="store_true", help="sweep top_k x temperature on dev")
    ap.add_argument("--crops", action="store_true", help="add the five-crop variant")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not (args.data / "captions.csv").exists():
        print(f"no Flickr8k captions under {args.data}; pass --data", file=sys.stderr)
        return 2

    files, captions, target = load_captions(args.data)
    dev = target < DEV_PHOTOS
    key = hashlib.sha256("\n".join(files).encode()).hexdigest()[:12]
    t0 = time.perf_counter()
    logits = cached(args.cache / f"flickr-logits-{key}.npy",
                    lambda: photo_logits(args.data, files))
    embedder = get_text_embedder()
    ckey = hashlib.sha256("\n".join(captions).encode()).hexdigest()[:12]
    queries = cached(args.cache / f"flickr-captions-{embedder.model_id}-{ckey}.npy",
                     lambda: embedder.encode_texts(captions))
    prompted = cached(
        args.cache / f"flickr-captions-prompt-{embedder.model_id}-{ckey}.npy",
        lambda: embedder.encode_texts(
            [f"a photo of {c.strip().rstrip(' .')[:1].lower()}{c.strip().rstrip(' .')[1:]}."
             for c in captions]),
    )
    print(f"logits {logits.shape}, captions {queries.shape} "
          f"({time.perf_counter() - t0:.1f}s, cached in {args.cache})", file=sys.stderr)

    def conse(params: ConSEParams) -> ConSE:
        return ConSE(embedder, params, cache_dir=args.cache)

    results: list[dict[str, object]] = []

    def run(name: str, images: np.ndarray, q: np.ndarray = queries, model: str = "") -> None:
        res = evaluate(images, q, target, dev)
        results.append({"variant": name, "model_id": model, **res})
        d, h, a = res["dev"], res["held-out"], res["all"]
        print(f"{name:58s} {d['R@10']:.3f} {d['MRR']:.3f} | {h['R@10']:.3f} {h['MRR']:.3f} | "
              f"{a['R@1']:.3f} {a['R@5']:.3f} {a['R@10']:.3f} {a['MRR']:.3f}", flush=True)

    def run_params(name: str, params: ConSEParams) -> None:
        c = conse(params)
        run(name, c.image_vectors(logits), model=c.model_id)

    header = f"{'variant':58s} dev R@10 MRR | held R@10 MRR | all R@1 R@5 R@10 MRR"
    print(header)
    print("-" * len(header))
    # The path from plain ConSE to the default, one change at a time.
    steps = [
        ("1 baseline: torchvision names, k=10, T=1", BASELINE),
        ("2 + CLIP's curated class names", replace(BASELINE, label_text="name")),
        ("3 + 'a photo of a {name}.'", replace(BASELINE, label_text="prompt")),
        ("4 + averaged with the WordNet gloss", replace(BASELINE, label_text="prompt+gloss")),
        ("5 + temperature 3", replace(BASELINE, label_text="prompt+gloss", temperature=3.0)),
        ("6 + centred label embeddings",
         replace(BASELINE, label_text="prompt+gloss", temperature=3.0, centre=True)),
        ("7 + all 1000 labels, top_k 1000", PREVIOUS),
        ("8 + ridge decoding, T 4 (= DEFAULT_CONSE)", DEFAULT_CONSE),
    ]
    for name, params in steps:
        run_params(name, params)
    print("-- one change from the default")
    ablations = [
        ("label text: torchvision names", replace(DEFAULT_CONSE, label_text="class")),
        ("label text: CLIP names", replace(DEFAULT_CONSE, label_text="name")),
        ("label text: all WordNet synonyms", replace(DEFAULT_CONSE, label_text="synonyms")),
        ("label text: prompt, no gloss", replace(DEFAULT_CONSE, label_text="prompt")),
        ("not centred", replace(DEFAULT_CONSE, centre=False)),
        ("no ridge (weighted mean, ConSE)", replace(DEFAULT_CONSE, ridge=0.0)),
        ("ridge 1", replace(DEFAULT_CONSE, ridge=1.0)),
        ("ridge 16", replace(DEFAULT_CONSE, ridge=16.0)),
        ("top_k 1", replace(DEFAULT_CONSE, top_k=1)),
        ("top_k 10", replace(DEFAULT_CONSE, top_k=10)),
        ("top_k 50", replace(DEFAULT_CONSE, top_k=50)),
        ("top_k 100", replace(DEFAULT_CONSE, top_k=100)),
        ("temperature 2", replace(DEFAULT_CONSE, temperature=2.0)),
        ("temperature 3", replace(DEFAULT_CONSE, temperature=3.0)),
        ("temperature 5", replace(DEFAULT_CONSE, temperature=5.0)),
    ]
    for name, params in ablations:
        run_params(name, params)
    default = conse(DEFAULT_CONSE)
    images = default.image_vectors(logits)
    run("query: 'a photo of {caption}.'", images, prompted)
    mean_label = conse(replace(DEFAULT_CONSE, centre=False)).label_matrix().mean(axis=0)
    run("query: minus the mean label embedding", images, _normalize(queries - mean_label))
    if args.crops:
        crops = cached(args.cache / f"flickr-logits-crops-{key}.npy",
                       lambda: photo_logits(args.data, files, crops=True))
        # Mean of the six views' probabilities, at the default temperature, then ConSE on
        # its log (a softmax at T=1 of log p gives p back).
        t = DEFAULT_CONSE.temperature
        views = [softmax(logits, t)] + [softmax(crops[:, c], t) for c in range(crops.shape[1])]
        mean_p = np.mean(views, axis=0)
        flat = replace(DEFAULT_CONSE, temperature=1.0)
        run("five crops + whole photo (ingest change)",
            conse(flat).image_vectors(np.log(mean_p)), model="")
    if args.grid:
        print("-- grid on dev (label text and centring as the default), by dev MRR")
        grid = []
        for ridge in (0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
            for k in (10, 20, 50, 100, 1000):
                for t in (1.0, 2.0, 3.0, 4.0, 5.0):
                    params = replace(DEFAULT_CONSE, top_k=k, temperature=t, ridge=ridge)
                    vectors = conse(params).image_vectors(logits)
                    res = evaluate(vectors, queries, target, dev)["dev"]
                    grid.append((res["MRR"], res["R@10"], k, t, ridge))
        for mrr, r10, k, t, ridge in sorted(grid, reverse=True)[:10]:
            print(f"  k={k:<5d} T={t:<4g} ridge={ridge:<4g} dev MRR {mrr:.3f} R@10 {r10:.3f}")
        results.append({"grid": [dict(k=k, temperature=t, ridge=ridge, dev_mrr=m, dev_r10=r)
                                 for m, r, k, t, ridge in grid]})
    change = paired_bootstrap(conse(PREVIOUS).image_vectors(logits), images, queries, target,
                              ~dev)
    print(f"-- held-out change, step 7 -> 8 (95% CI, photos resampled): {json.dumps(change)}")
    timing = time_default(default, logits)
    print(f"-- timing: {json.dumps(timing)}")
    out = {"dev_photos": DEV_PHOTOS, "photos": len(files), "queries": len(captions),
           "default": DEFAULT_CONSE.slug, "timing": timing, "held_out_change": change,
           "results": results}
    print(json.dumps(out))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    return 0


def paired_bootstrap(before: np.ndarray, after: np.ndarray, queries: np.ndarray,
                     target: np.ndarray, keep: np.ndarray, rounds: int = 2000,
                     seed: int = 0) -> dict[str, list[float]]:
    """Change in R@10 and MRR from `before` to `after` photo vectors on the `keep` queries:
    [change, 2.5th, 97.5th percentile]. Photos are resampled with their captions (a photo's
    five captions are not independent queries)."""
    a, b = (ranks(queries[keep] @ images.T, target[keep]) for images in (before, after))
    photo = target[keep]
    members = [np.flatnonzero(photo == p) for p in np.unique(photo)]
    rng = np.random.default_rng(seed)
    d10, dmrr = [], []
    for _ in range(rounds):
        idx = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        d10.append((b[idx] <= 10).mean() - (a[idx] <= 10).mean())
        dmrr.append((1 / b[idx]).mean() - (1 / a[idx]).mean())
    out = {}
    for name, diff, boot in (("R@10", (b <= 10).mean() - (a <= 10).mean(), d10),
                             ("MRR", (1 / b).mean() - (1 / a).mean(), dmrr)):
        lo, hi = np.percentile(boot, [2.5, 97.5])
        out[name] = [round(float(diff), 4), round(float(lo), 4), round(float(hi), 4)]
    return out


def _normalize(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def time_default(conse: ConSE, logits: np.ndarray) -> dict[str, float]:
    """Label-matrix build (from the texts, not the shipped file), the ridge decoder, and
    image_vectors cost per photo, wall and CPU time."""
    fresh = ConSE(conse.embedder, conse.params, cache_dir=None)
    w0, c0 = time.perf_counter(), time.process_time()
    labels = fresh._embed(label_texts(conse.params.label_text))
    build_wall, build_cpu = time.perf_counter() - w0, time.process_time() - c0
    w0 = time.perf_counter()
    ridge_decoder(labels, conse.params.ridge or 1.0)
    decoder_ms = (time.perf_counter() - w0) * 1e3
    fresh.label_matrix()  # from the shipped file, so the timings below are of the maths alone
    w0 = time.perf_counter()
    for _ in range(5):
        fresh.image_vectors(logits)
    batch = (time.perf_counter() - w0) / (5 * len(logits))
    w0 = time.perf_counter()
    for row in logits[:100]:
        fresh.image_vectors(row[None])
    single = (time.perf_counter() - w0) / 100
    return {"label_matrix_build_wall_s": round(build_wall, 2),
            "label_matrix_build_cpu_s": round(build_cpu, 2),
            "ridge_decoder_ms": round(decoder_ms, 1),
            "image_vectors_batch_us_per_image": round(batch * 1e6, 1),
            "image_vectors_single_us": round(single * 1e6, 1)}


if __name__ == "__main__":
    raise SystemExit(main())
