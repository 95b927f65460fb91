"""Verifying a data directory: database ↔ Whoosh index ↔ vectors ↔ derived files ↔ sources.

`check` lists every problem found; `repair` fixes what can be fixed from the database (the
source of truth): it rebuilds the Whoosh index, computes missing vectors, drops orphan vectors,
zero-shot vectors of an earlier method, and orphan derived files, and removes temporary files
left by an interrupted write. A missing source file cannot be repaired and is only reported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import text

from .collection import ORIGINALS_DIR, SEMANTIC_MODEL, THUMBS_DIR, Collection
from .zeroshot import MODEL_PREFIX as CONSE_PREFIX

__all__ = ["Problem", "check", "repair"]


@dataclass(frozen=True)
class Problem:
    """One inconsistency: what kind, in words, and whether `repair` can fix it."""

    kind: str
    detail: str
    repairable: bool = True

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def _sample(ids: set[int] | list[int], n: int = 5) -> str:
    items = sorted(ids)[:n]
    more = f" and {len(ids) - n} more" if len(ids) > n else ""
    return ", ".join(map(str, items)) + more


def _stray_files(collection: Collection) -> Iterator[tuple[Path, str]]:
    """Derived files that belong to no stored image, and temporary files left by a write."""
    hashes = collection.store.known_hashes()
    for folder in (THUMBS_DIR, ORIGINALS_DIR):
        base = collection.root / folder
        if not base.is_dir():
            continue
        for path in list(base.rglob("*")):
            if not path.is_file():
                continue
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                yield path, "leftover temporary file"
            elif path.name[:64] not in hashes:
                yield path, "orphan file"


def check(collection: Collection, quick: bool = False) -> list[Problem]:
    """Every problem found in the data directory; `quick` skips per-file checks of sources."""
    problems: list[Problem] = []
    store = collection.store
    with store.engine.connect() as conn:
        result = conn.execute(text("PRAGMA quick_check" if quick else "PRAGMA integrity_check"))
        verdict = [r[0] for r in result]
        orphan_vecs = conn.execute(text(
            "SELECT COUNT(*) FROM embeddings WHERE image_id NOT IN (SELECT id FROM images)"
        )).scalar_one()
        bad_vecs = conn.execute(text(
            "SELECT COUNT(*) FROM embeddings WHERE length(vector) != 4 * dim"
        )).scalar_one()
    if verdict != ["ok"]:
        problems.append(Problem("database", "SQLite integrity check failed: "
                                + "; ".join(verdict[:3]), repairable=False))
    if orphan_vecs:
        problems.append(Problem("vectors", f"{orphan_vecs} vectors belong to no image"))
    if bad_vecs:
        problems.append(Problem("vectors", f"{bad_vecs} vectors have the wrong length"))

    db_ids = store.all_ids()
    try:
        index_ids = collection.text.ids(fresh=True)
    except Exception as e:  # an unreadable index is a problem to report, not a crash
        problems.append(Problem("text index", f"unreadable ({e})"))
        index_ids = None
    if index_ids is not None:
        missing = db_ids - index_ids
        extra = index_ids - db_ids
        if missing:
            problems.append(Problem("text index", f"{_n(len(missing), 'image')} not indexed "
                                    f"(ids {_sample(missing)})"))
        if extra:
            problems.append(Problem("text index", f"{len(extra)} indexed documents have no "
                                    f"image (ids {_sample(extra)})"))

    leftovers = [p for pattern in (".whoosh.rebuild-*", ".whoosh.old-*")
                 for p in collection.root.glob(pattern)]
    for leftover in leftovers:
        problems.append(Problem("text index", f"folder left by an interrupted rebuild: "
                                f"{leftover}"))

    no_vec = set(store.ids_without_vector(collection.model_id))
    if no_vec:
        problems.append(Problem("vectors", f"{len(no_vec)} images have no {collection.model_id} "
                                f"vector (ids {_sample(no_vec)})"))
    if collection.settings.zero_shot and not collection.is_clip:
        no_vis = set(store.ids_without_vector(collection.visual_model_id or ""))
        if no_vis:
            problems.append(Problem("vectors", f"{len(no_vis)} images have no zero-shot "
                                    f"vector (ids {_sample(no_vis)})"))
    old = _superseded_zero_shot(collection)
    if old:
        problems.append(Problem("vectors", f"{sum(old.values())} zero-shot vectors of an earlier "
                                f"method, no longer used ({', '.join(sorted(old))})"))
    if collection.settings.semantic:
        no_sem = (db_ids - collection.unannotated_ids()) & set(
            store.ids_without_vector(SEMANTIC_MODEL))
        if no_sem:
            problems.append(Problem("vectors", f"{len(no_sem)} annotated images have no "
                                    f"meaning vector (ids {_sample(no_sem)})"))

    for path, what in _stray_files(collection):
        problems.append(Problem("derived files", f"{what} {path}"))
    if not quick:
        for record in store.iter_records():
            if not Path(record.path).is_file():
                problems.append(Problem("source files", f"image {record.id}: {record.path} is "
                                        "missing", repairable=False))
    return problems


def _superseded_zero_shot(collection: Collection) -> dict[str, int]:
    """Vector counts of zero-shot (ConSE) model ids other than the one this version computes.

    The method's parameters are fixed in code, not settings, so after an upgrade that
    changed them the old vectors can never be used again (`repair` computes the new ones from
    the photos, then drops the old)."""
    current = collection.conse.model_id
    return {m: n for m, n in collection.store.models().items()
            if m.startswith(CONSE_PREFIX) and m != current}


def repair(
    collection: Collection, progress: Callable[[int, int], None] | None = None
) -> list[Problem]:
    """Fix every repairable problem; returns what is left."""
    from .ingest import embed_missing

    problems = check(collection)
    kinds = {p.kind for p in problems if p.repairable}
    if "vectors" in kinds:
        with collection.store.engine.begin() as conn:
            conn.execute(text(
                "DELETE FROM embeddings WHERE image_id NOT IN (SELECT id FROM images) "
                "OR length(vector) != 4 * dim"
            ))
        embed_missing(collection, progress=progress)
        # Only once the current method's vectors are in: a crash before this leaves both.
        for model in _superseded_zero_shot(collection):
            with collection.store.engine.begin() as conn:
                conn.execute(text("DELETE FROM embeddings WHERE model = :m"), {"m": model})
    if "text index" in kinds:
        collection.reindex()
    if "derived files" in kinds:
        for path, _ in _stray_files(collection):
            path.unlink(missing_ok=True)
    return check(collection)
