"""Ingest throughput: the model's forward pass alone vs end-to-end `ingest`, in one run.

    python bench/ingest_throughput.py [--data ../shared/data/corel1k] [--batch-sizes 8,16,32,64]

1. Preprocesses the set's images once, then times the model's forward pass alone at each
   batch size (after a warm-up batch) and keeps the best.
2. Runs the real `ingest` (read, hash, decode, preprocess, embed, SQLite + Whoosh writes) on
   the same folder into a fresh data directory at that batch size, model already loaded.
3. Prints figures and the ratio end-to-end / model-alone as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from hybrid_search.collection import Collection
from hybrid_search.decode import EXTENSIONS
from hybrid_search.ingest import ingest
from hybrid_search.settings import load_settings

DEFAULT_DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "corel1k"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--batch-sizes", default="8,16,32,64")
    parser.add_argument("--model-images", type=int, default=256,
                        help="images per batch-size trial of the model alone")
    args = parser.parse_args()
    if not args.data.is_dir():
        sys.exit(f"benchmark data not found: {args.data} (see ../shared/data/README.md)")
    files = sorted(p for p in args.data.rglob("*") if p.suffix.lower() in EXTENSIONS)

    with tempfile.TemporaryDirectory() as tmp:
        settings = load_settings(data_dir=Path(tmp) / "data", env={})
        col = Collection(settings)
        embedder = col.embedder
        arrays = np.stack([embedder.preprocess(Image.open(f).convert("RGB"))
                           for f in files[: args.model_images]])
        embedder.encode_arrays(arrays[:8])  # load weights, warm up
        model_ips: dict[int, float] = {}
        for bs in [int(b) for b in args.batch_sizes.split(",")]:
            embedder.encode_arrays(arrays[:bs])
            start = time.perf_counter()
            for i in range(0, len(arrays), bs):
                embedder.encode_arrays(arrays[i : i + bs])
            model_ips[bs] = len(arrays) / (time.perf_counter() - start)
            print(f"model alone, batch {bs}: {model_ips[bs]:.1f} img/s", file=sys.stderr)
        best = max(model_ips, key=model_ips.__getitem__)
        col.close()

        col = Collection(settings.replace(batch_size=best,
                                          data_dir=str(Path(tmp) / "data2")))
        col.embedder.encode_arrays(arrays[:best])  # same process-wide model, already warm
        start = time.perf_counter()
        report = ingest(col, [args.data])
        seconds = time.perf_counter() - start
        col.close()

    e2e = len(report.added) / seconds
    print(json.dumps({
        "data": str(args.data),
        "images": len(files),
        "added": len(report.added),
        "failed": len(report.failed),
        "torch_threads": torch.get_num_threads(),
        "model_alone_img_per_s": {str(k): round(v, 2) for k, v in model_ips.items()},
        "best_batch_size": best,
        "model_alone_best_img_per_s": round(model_ips[best], 2),
        "ingest_end_to_end_img_per_s": round(e2e, 2),
        "ingest_seconds": round(seconds, 2),
        "ratio_end_to_end_over_model": round(e2e / model_ips[best], 3),
    }, indent=2))


if __name__ == "__main__":
    main()
