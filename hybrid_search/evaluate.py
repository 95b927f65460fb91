"""Measuring retrieval quality on a labelled image set (CBIR, leave-one-out).

Every image is a query against all the others; an image is relevant to a query when it has
the same label (Corel: class, COIL-100: object). Reported: mean average precision over the
full ranking, precision at 10 and 20.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from .collection import Collection
from .exceptions import AnnotationError
from .ingest import ingest

__all__ = ["average_precision", "evaluate_images", "read_ground_truth", "retrieval_metrics"]


def read_ground_truth(path: Path, root: Path | None = None) -> list[tuple[Path, str]]:
    """(file, label) pairs from a CSV with columns `file,label` or `file,group`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"cannot read ground truth {path}: {e}") from None
    reader = csv.DictReader(text.splitlines())
    fields = reader.fieldnames or []
    label_col = "label" if "label" in fields else "group" if "group" in fields else None
    if "file" not in fields or label_col is None:
        raise AnnotationError(f"ground truth {path} needs columns file,label or file,group")
    base = root if root is not None else path.parent
    out = []
    for lineno, row in enumerate(reader, start=2):
        if not row.get("file") or not row.get(label_col):
            raise AnnotationError(f"{path}, line {lineno}: empty file or {label_col}")
        out.append(((base / row["file"]).resolve(), row[label_col]))
    if not out:
        raise AnnotationError(f"ground truth {path} lists no files")
    return out


def average_precision(relevant: np.ndarray) -> float:
    """AP of one ranking given as a boolean array, best first."""
    n_rel = int(relevant.sum())
    if n_rel == 0:
        return 0.0
    hits = np.cumsum(relevant)
    ranks = np.arange(1, len(relevant) + 1)
    return float((hits[relevant] / ranks[relevant]).sum() / n_rel)


def retrieval_metrics(
    matrix: np.ndarray, norms: np.ndarray, labels: list[str], metric: str = "cosine",
    chunk: int = 512,
) -> dict[str, float]:
    """Leave-one-out mAP, P@10 and P@20 of every row as a query against all other rows."""
    lab = np.asarray(labels)
    n = len(lab)
    aps, p10, p20 = [], [], []
    for start in range(0, n, chunk):
        block = matrix[start : start + chunk]
        cos = block @ matrix.T
        if metric == "euclidean":
            qn = norms[start : start + chunk, None]
            sq = qn * qn + norms[None, :] ** 2 - 2.0 * qn * norms[None, :] * cos
            scores = -np.sqrt(np.maximum(sq, 0.0))
        else:
            scores = cos
        for r in range(len(block)):
            q = start + r
            s = scores[r].copy()
            s[q] = -np.inf
            order = np.argsort(-s, kind="stable")[:-1]
            rel = lab[order] == lab[q]
            aps.append(average_precision(rel))
            p10.append(rel[:10].sum() / 10)
            p20.append(rel[:20].sum() / 20)
    return {"mAP": float(np.mean(aps)), "P@10": float(np.mean(p10)),
            "P@20": float(np.mean(p20)), "n_queries": n}


def evaluate_images(
    collection: Collection,
    ground_truth: Path,
    root: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Ingest a labelled set (reusing stored images) and measure image-to-image retrieval."""
    pairs = read_ground_truth(ground_truth, root)
    missing = [str(p) for p, _ in pairs if not p.is_file()]
    if missing:
        raise AnnotationError(
            f"{len(missing)} files in {ground_truth} do not exist, e.g. {missing[0]}"
        )
    report = ingest(collection, [p for p, _ in pairs], progress=progress)
    # Map each file to its stored id through its content hash (duplicates share one id).
    label_of: dict[int, str] = {}
    for path, label in pairs:
        image_id = collection.store.id_for_hash(hashlib.sha256(path.read_bytes()).hexdigest())
        if image_id is not None:
            label_of.setdefault(image_id, label)
    vectors = collection.vectors
    ids = [i for i in sorted(label_of) if i in vectors]
    rows = [vectors.get(i) for i in ids]
    matrix = np.stack([r[0] for r in rows if r is not None])
    norms = np.array([r[1] for r in rows if r is not None], dtype=np.float32)
    metric = str(collection.settings.metric)
    result = retrieval_metrics(matrix, norms, [label_of[i] for i in ids], metric)
    return {
        **result,
        "model": collection.model_id,
        "metric": metric,
        "n_files": len(pairs),
        "failed": len(report.failed),
        "added": len(report.added),
    }
