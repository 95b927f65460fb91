"""Measuring retrieval quality on a labelled image set (CBIR, leave-one-out).

Every image is a query against all the others; an image is relevant to a query when it has
the same label (Corel: class, COIL-100: object). Reported: mean average precision over the
full ranking, precision at 10 and 20.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .collection import Collection
from .exceptions import AnnotationError
from .ingest import ingest, stored_id

__all__ = [
    "average_precision",
    "evaluate_captions",
    "evaluate_images",
    "read_captions",
    "read_ground_truth",
    "recall_metrics",
    "retrieval_metrics",
]


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
        image_id = stored_id(collection, path)
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


def read_captions(path: Path, root: Path | None = None) -> dict[Path, list[str]]:
    """Captions per photo, in file order, from a CSV with columns `file,caption`."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise AnnotationError(f"cannot read captions {path}: {e}") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if not {"file", "caption"} <= set(reader.fieldnames or []):
        raise AnnotationError(f"captions {path} needs columns file,caption")
    base = root if root is not None else path.parent
    out: dict[Path, list[str]] = {}
    for row in reader:
        if not row.get("file") or not (row.get("caption") or "").strip():
            raise AnnotationError(f"{path}, line {reader.line_num}: empty file or caption")
        out.setdefault((base / row["file"]).resolve(), []).append(row["caption"].strip())
    if not out:
        raise AnnotationError(f"captions {path} lists no files")
    return out


def recall_metrics(ranks: Sequence[int | None]) -> dict[str, float]:
    """R@1/5/10 and MRR from the 1-based rank of each query's one relevant item (None: missed)."""
    n = len(ranks)
    if n == 0:
        return {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "MRR": 0.0}
    found = [r for r in ranks if r is not None]
    return {
        "R@1": sum(r <= 1 for r in found) / n,
        "R@5": sum(r <= 5 for r in found) / n,
        "R@10": sum(r <= 10 for r in found) / n,
        "MRR": sum(1.0 / r for r in found) / n,
    }


def _rank_of(ids: Sequence[int], target: int) -> int | None:
    for n, i in enumerate(ids, start=1):
        if i == target:
            return n
    return None


def evaluate_captions(
    collection: Collection,
    ground_truth: Path,
    root: Path | None = None,
    annotate_fraction: float = 0.0,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, object]:
    """Text-to-image retrieval on captioned photos, by words, by looks, and fused.

    Ingests the photos (reusing stored ones); for a seeded fraction of them stores the first
    caption as the photo's manual annotation (and clears the others' words), then uses every
    other caption as a query whose one relevant photo is its own.
    """
    from .search import SearchRequest, rank

    if not 0.0 <= annotate_fraction <= 1.0:
        raise AnnotationError(
            f"annotate fraction must be between 0 and 1, not {annotate_fraction}"
        )
    captions = read_captions(ground_truth, root)
    missing = [str(p) for p in captions if not p.is_file()]
    if missing:
        raise AnnotationError(f"{len(missing)} files in {ground_truth} do not exist, "
                              f"e.g. {missing[0]}")
    ingest(collection, list(captions), progress=progress)
    id_of: dict[Path, int] = {}
    for path in captions:
        image_id = stored_id(collection, path)
        if image_id is not None:
            id_of[path] = image_id
    photos = sorted(id_of, key=str)
    rng = np.random.default_rng(seed)
    n_annotated = int(round(annotate_fraction * len(photos)))
    chosen = {photos[i] for i in rng.permutation(len(photos))[:n_annotated]}
    for path in photos:
        record = collection.get(id_of[path])
        title = ""
        description = captions[path][0] if path in chosen else ""
        if (record.title, record.description, record.tags) != (title, description, ()):
            collection.annotate(id_of[path], title=title, description=description, tags=())
    queries = [(id_of[p], c) for p in photos for c in captions[p][1:]]
    n_all = len(photos)
    ranks: dict[str, list[int | None]] = {"text": [], "visual": [], "hybrid": []}
    visual_model = collection.visual_model_id
    visual_index = collection.vector_index(visual_model) if visual_model else None
    batch = 256
    for start in range(0, len(queries), batch):
        chunk = queries[start : start + batch]
        if visual_index is not None:
            qv = collection.visual_query([c for _, c in chunk])
            for (target, _), q in zip(chunk, qv, strict=True):
                ids, scores = visual_index.scores(q)
                order = ids[np.lexsort((ids, -scores))]
                ranks["visual"].append(_rank_of(order.tolist(), target))
        for target, caption in chunk:
            text_hits = collection.text.search(caption, n_all)
            ranks["text"].append(_rank_of([i for i, _ in text_hits], target))
            fused = rank(collection, SearchRequest(text=caption, limit=min(n_all, 1000))).fused
            ranks["hybrid"].append(_rank_of([h.id for h in fused], target))
        if progress is not None:
            progress(min(start + batch, len(queries)), len(queries))
    result: dict[str, object] = {
        mode: recall_metrics(r) for mode, r in ranks.items() if r
    }
    result.update({
        "n_queries": len(queries),
        "n_photos": n_all,
        "annotated": len(chosen),
        "annotate_fraction": annotate_fraction,
        "seed": seed,
        "model": collection.model_id,
        "visual_model": visual_model,
        "weights": {"text": collection.settings.weight_text,
                    "semantic": collection.settings.weight_semantic,
                    "visual": collection.settings.weight_visual},
        "fusion": collection.settings.fusion,
    })
    return result
