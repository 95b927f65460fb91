"""A photo collection in one data directory: the database, the Whoosh index and the vectors.

The database is the source of truth. The Whoosh index and the in-memory vector matrix are
derived from it: `reindex` rebuilds the index, and the matrix is loaded from the database on
first use and then kept current by every write made through this object.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .embedding import ImageEmbedder, get_image_embedder
from .exceptions import NotFoundError, StorageError
from .settings import Settings
from .spelling import DEFAULT_SYNONYMS_PATH, Synonyms, load_synonyms
from .storage import ImageRecord, NewImage, Store, open_store
from .text_index import TextDoc, TextIndex
from .vectors import VectorIndex

__all__ = ["DB_NAME", "SEMANTIC_MODEL", "TEXT_INDEX_DIR", "THUMBS_DIR", "Collection", "text_doc"]

DB_NAME = "hybrid-search.db"
SEMANTIC_MODEL = "minilm-l6-v2/annotations"
DERIVED_DIR = "derived"
QUERY_CACHE_SIZE = 1024
JOURNAL_DIR = "journal"
TEXT_INDEX_DIR = "whoosh"
THUMBS_DIR = "thumbs"
ORIGINALS_DIR = "originals"


def text_doc(record: ImageRecord) -> TextDoc:
    """The Whoosh document of an image's annotations (manual, and machine-made tags)."""
    return TextDoc(
        id=record.id, title=record.title, description=record.description, tags=record.tags,
        auto_tags=tuple(t for t, _ in record.auto_tags),
    )


def _synonyms(settings: Settings) -> Synonyms | None:
    """The synonyms file named in the settings, else the shipped one if present."""
    if settings.synonyms_file:
        return load_synonyms(Path(os.path.expanduser(str(settings.synonyms_file))))
    return load_synonyms(DEFAULT_SYNONYMS_PATH) if DEFAULT_SYNONYMS_PATH.is_file() else None


def _dead_writers(folder: Path) -> list[Path]:
    """Markers left by writer processes that are no longer running."""
    if not folder.is_dir():
        return []
    dead = []
    for marker in folder.iterdir():
        try:
            pid = int(marker.name.split(".", 1)[0])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            dead.append(marker)
        except PermissionError:  # alive, another user's
            continue
    return dead


class Collection:
    """Everything stored about a photo collection, and the derived indexes kept in step."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root: Path = settings.data_path
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StorageError(f"cannot create data directory {self.root}: {e.strerror}") from None
        if not self.root.is_dir():
            raise StorageError(f"data directory {self.root} is not a directory")
        self.store: Store = open_store(self.root / DB_NAME)
        self.text = TextIndex(
            self.root / TEXT_INDEX_DIR,
            {
                "title": settings.boost_title,
                "tags": settings.boost_tags,
                "description": settings.boost_description,
                "auto_tags": settings.boost_auto_tags,
            },
            synonyms=_synonyms(settings),
        )
        self._indexes: dict[str, VectorIndex] = {}
        self._unannotated: set[int] | None = None
        self._query_cache: dict[str, np.ndarray] = {}
        # _lock guards the in-memory state (matrices, caches) and is held only briefly, so
        # searches never wait for a write; _write_lock puts this process's writers in line
        # (SQLite and Whoosh's own lock do the same across processes).
        self._lock = threading.RLock()
        self._write_lock = threading.RLock()
        self._seen_change = self.store.last_change()
        self._sync_text_index()

    # -- derived state ---------------------------------------------------------------------
    @property
    def model_id(self) -> str:
        """Id of the active image model and weights; vectors of others are never searched."""
        if str(self.settings.model).startswith("clip:"):
            return str(self.embedder.model_id)
        return str(self.settings.model)

    @property
    def embedder(self) -> ImageEmbedder:
        """The active image model (loaded lazily on first encode)."""
        return get_image_embedder(
            self.settings.model,
            pretrained=self.settings.clip_pretrained,
            device=self.settings.device,
            threads=self.settings.threads,
        )

    @property
    def vectors(self) -> VectorIndex:
        """The in-memory matrix of the active image model's vectors, loaded on first use."""
        return self.vector_index(self.model_id)

    def vector_index(self, model: str) -> VectorIndex:
        """The in-memory matrix of one model's vectors, loaded from the database on first use."""
        with self._lock:
            index = self._indexes.get(model)
            if index is None:
                ids, matrix, norms = self.store.load_vectors(model)
                index = self._indexes[model] = VectorIndex.from_arrays(ids, matrix, norms)
            return index

    @property
    def is_clip(self) -> bool:
        """Whether the active image model is a CLIP model (with a text tower)."""
        return self.model_id.startswith("clip:")

    @property
    def text_embedder(self) -> Any:
        """MiniLM sentence embeddings (bundled; loaded lazily)."""
        from .text_embedding import get_text_embedder

        return get_text_embedder()

    @property
    def conse(self) -> Any:
        """The zero-shot words-to-image mapping for the bundled CNN (ConSE)."""
        from .zeroshot import default_conse

        return default_conse(self.text_embedder, cache_dir=self.root / DERIVED_DIR)

    @property
    def visual_model_id(self) -> str | None:
        """Model id of the vectors that query words are compared with, or None if disabled."""
        if not self.settings.zero_shot:
            return None
        if self.is_clip:
            return self.model_id
        return str(self.conse.model_id)

    def visual_query(self, texts: Sequence[str]) -> np.ndarray:
        """Query words as vectors comparable with `visual_model_id`'s image vectors."""
        if self.is_clip:
            return self.embedder.encode_texts(list(texts))  # type: ignore[attr-defined]
        return self.conse.query_from_embeddings(self.semantic_query(texts))

    def semantic_query(self, texts: Sequence[str]) -> np.ndarray:
        """Query words as MiniLM vectors (comparable with the annotations' meaning vectors).

        Recent queries are remembered, so paging through results, moving the weight slider,
        or the semantic and zero-shot signals of one query each encode the words once.
        """
        words = [t.strip() for t in texts]
        if not words:
            return np.zeros((0, self.text_embedder.dim), dtype=np.float32)
        with self._lock:
            found = {w: self._query_cache.get(w) for w in words}
        missing = [w for w, v in found.items() if v is None]
        if missing:
            vecs = self.text_embedder.encode_texts(missing)
            with self._lock:
                for w, v in zip(missing, vecs, strict=True):
                    found[w] = self._query_cache[w] = v
                while len(self._query_cache) > QUERY_CACHE_SIZE:
                    self._query_cache.pop(next(iter(self._query_cache)))
        return np.stack([found[w] for w in words])

    def semantic_vectors(self, records: Sequence[ImageRecord]) -> list[tuple[int, np.ndarray]]:
        """Meaning vectors of the annotated records among `records`."""
        texts = [(r.id, r.annotation_text) for r in records if r.annotation_text]
        if not texts:
            return []
        vecs = self.text_embedder.encode_texts([t for _, t in texts])
        return [(i, v) for (i, _), v in zip(texts, vecs, strict=True)]

    def unannotated_ids(self) -> set[int]:
        """Images with no manual words: the text signal cannot judge them."""
        with self._lock:
            if self._unannotated is None:
                self._unannotated = self.store.all_ids() - self.store.annotated_ids()
            return self._unannotated

    def refresh(self) -> None:
        """Bring the in-memory matrices and caches up to date with writes by other processes.

        Every write logs the ids it touched; this reads the log since the last look (one small
        query when nothing changed) and reloads just those ids, or everything if the log was
        pruned past that point.
        """
        last, changed = self.store.changes_since(self._seen_change)
        if last == self._seen_change and changed == set():
            return
        with self._lock:
            if changed is None:
                self._indexes.clear()
                self._unannotated = None
            elif changed:
                for model, index in self._indexes.items():
                    found = self.store.vectors_for(model, changed)
                    index.remove([i for i in changed if i not in found])
                    if found:
                        index.add(list(found), np.stack([v for v, _ in found.values()]),
                                  np.array([n for _, n in found.values()], dtype=np.float32))
                if self._unannotated is not None:
                    present = {r.id: r for r in self.store.get_many(sorted(changed))}
                    for i in changed:
                        rec = present.get(i)
                        if rec is None or rec.annotated:
                            self._unannotated.discard(i)
                        else:
                            self._unannotated.add(i)
            self._seen_change = max(self._seen_change, last)

    def _sync_text_index(self) -> None:
        """Rebuild the Whoosh index if a writer died mid-write, if it is unreadable, or if its
        size disagrees with the database."""
        interrupted = _dead_writers(self.root / JOURNAL_DIR)
        try:
            in_sync = not interrupted and self.text.doc_count() == self.store.count()
        except StorageError:
            in_sync = False
        if not in_sync:
            self.reindex()
        if interrupted:
            # A writer killed after an annotation commit may not have stored the new words'
            # meaning vector yet (the old one goes with the commit): compute the missing ones.
            self.fill_missing_semantic()
        for marker in interrupted:
            marker.unlink(missing_ok=True)

    def fill_missing_semantic(self) -> int:
        """Compute meaning vectors for annotated images that lack one; returns how many."""
        if not self.settings.semantic:
            return 0
        missing = set(self.store.ids_without_vector(SEMANTIC_MODEL))
        todo = [r for r in self.store.get_many(sorted(missing)) if r.annotation_text]
        for start in range(0, len(todo), 256):
            chunk = todo[start : start + 256]
            self.set_vectors(SEMANTIC_MODEL, [(i, v, 1.0) for i, v in self.semantic_vectors(chunk)])
        return len(todo)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Mark a database write whose Whoosh update has not happened yet.

        The database commits first and the index follows; a process killed in between leaves
        its marker behind, and the next process to open the collection rebuilds the index
        from the database.
        """
        folder = self.root / JOURNAL_DIR
        folder.mkdir(exist_ok=True)
        # One marker per write: a failed write's marker must outlive later writes.
        marker = folder / f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex}"
        fd = os.open(marker, os.O_CREAT | os.O_WRONLY, 0o644)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        yield
        marker.unlink(missing_ok=True)

    def reindex(self) -> int:
        """Rebuild the Whoosh index from the database; returns the number of documents."""
        with self._write_lock:
            docs = [text_doc(r) for r in self.store.iter_records()]
            self.text.rebuild(docs)
            with self._lock:
                self._unannotated = None
                self._indexes.clear()
            return len(docs)

    # -- writes ----------------------------------------------------------------------------
    def add(self, items: Sequence[NewImage]) -> list[int | None]:
        """Store new images and index them; None for each item whose bytes were already known."""
        with self._write_lock, self._writing():
            ids = self.store.add_images(items)
            new = [(i, item) for i, item in zip(ids, items, strict=True) if i is not None]
            if not new:
                return ids
            self.text.upsert(
                TextDoc(id=i, title=it.title, description=it.description, tags=it.tags,
                        auto_tags=tuple(t for t, _ in it.auto_tags))
                for i, it in new
            )
            with self._lock:
                if self._unannotated is not None:
                    self._unannotated.update(
                        i for i, it in new if not (it.title or it.description or it.tags)
                    )
            by_model: dict[str, list[tuple[int, np.ndarray, float]]] = {}
            for i, it in new:
                if it.vector is not None and it.model is not None:
                    by_model.setdefault(it.model, []).append((i, it.vector, it.norm))
                for model, vec, norm in it.extra_vectors:
                    by_model.setdefault(model, []).append((i, vec, norm))
            for model, rows in by_model.items():
                self._update_index(model, rows)
            return ids

    def _update_index(self, model: str, rows: Sequence[tuple[int, np.ndarray, float]]) -> None:
        """Add rows to a loaded in-memory index (an index not loaded yet reads the database)."""
        with self._lock:
            index = self._indexes.get(model)
        if index is not None and rows:
            index.add([i for i, _, _ in rows], np.stack([v for _, v, _ in rows]),
                      np.array([n for _, _, n in rows], dtype=np.float32))

    def annotate(
        self,
        image_id: int,
        *,
        title: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
    ) -> ImageRecord:
        """Change an image's manual annotations and re-index it at once."""
        with self._write_lock, self._writing():
            record = self.store.annotate(
                image_id, title=title, description=description, tags=tags,
                add_tags=add_tags, remove_tags=remove_tags,
                drop_vectors=(SEMANTIC_MODEL,) if self.settings.semantic else (),
            )
            self.text.upsert([text_doc(record)])
            with self._lock:
                if self._unannotated is not None:
                    if record.annotated:
                        self._unannotated.discard(record.id)
                    else:
                        self._unannotated.add(record.id)
            self._refresh_semantic([record])
            return record

    def _refresh_semantic(self, records: Sequence[ImageRecord]) -> None:
        """Recompute (or drop) the meaning vectors of records whose annotations changed."""
        if not self.settings.semantic:
            return
        vectors = self.semantic_vectors(records)
        have = {i for i, _ in vectors}
        gone = [r.id for r in records if r.id not in have]
        if vectors:
            self.set_vectors(SEMANTIC_MODEL, [(i, v, 1.0) for i, v in vectors])
        if gone:
            self.store.delete_vectors(SEMANTIC_MODEL, gone)
            with self._lock:
                index = self._indexes.get(SEMANTIC_MODEL)
            if index is not None:
                index.remove(gone)

    def set_auto_tags(self, image_id: int, tags: Sequence[tuple[str, float]]) -> ImageRecord:
        """Replace an image's machine-made tags and re-index it."""
        with self._write_lock, self._writing():
            record = self.store.set_auto_tags(image_id, tags)
            self.text.upsert([text_doc(record)])
            return record

    def review_auto_tag(self, image_id: int, tag: str, confirm: bool) -> ImageRecord:
        """Confirm a machine-made tag (it becomes manual) or reject it, and re-index."""
        with self._write_lock, self._writing():
            record = self.store.review_auto_tag(
                image_id, tag, confirm,
                drop_vectors=(SEMANTIC_MODEL,) if self.settings.semantic else (),
            )
            self.text.upsert([text_doc(record)])
            with self._lock:
                if self._unannotated is not None and record.annotated:
                    self._unannotated.discard(record.id)
            if confirm:
                self._refresh_semantic([record])
            return record

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Delete images everywhere; returns the ids that existed."""
        with self._write_lock, self._writing():
            records = self.store.get_many(list(ids))
            removed = self.store.remove(r.id for r in records)
            self.text.delete(removed)
            with self._lock:
                for index in self._indexes.values():
                    index.remove(removed)
                if self._unannotated is not None:
                    self._unannotated.difference_update(removed)
            for r in records:
                for path in self.derived_files(r.sha256):
                    path.unlink(missing_ok=True)
            return removed

    def set_vectors(self, model: str, items: Sequence[tuple[int, np.ndarray, float]]) -> None:
        """Store vectors for existing images and update the matrix if it is the active model."""
        with self._write_lock:
            self.store.set_vectors(model, items)
            self._update_index(model, items)

    # -- reads -----------------------------------------------------------------------------
    def get(self, image_id: int) -> ImageRecord:
        """One image's record."""
        return self.store.get(image_id)

    def image_vector(self, image_id: int) -> tuple[np.ndarray, float]:
        """The stored vector of an image under the active model."""
        found = self.vectors.get(image_id)
        if found is None:
            self.store.get(image_id)  # NotFoundError for an unknown id
            raise NotFoundError(f"image {image_id} has no vector for model {self.model_id}")
        return found

    def derived_files(self, sha256: str) -> list[Path]:
        """Files derived from one image (thumbnails, stored originals)."""
        out = []
        for folder in (THUMBS_DIR, ORIGINALS_DIR):
            base = self.root / folder / sha256[:2]
            if base.is_dir():
                out.extend(base.glob(sha256 + "*"))
        return out

    def stats(self) -> dict[str, object]:
        """Counts that describe the collection."""
        models = self.store.models()
        return {
            "images": self.store.count(),
            "annotated": len(self.store.annotated_ids()),
            "text_index_documents": self.text.doc_count(),
            "model": self.model_id,
            "vectors": models.get(self.model_id, 0),
            "vectors_by_model": models,
            "data_dir": str(self.root),
        }

    def close(self) -> None:
        """Release the database and index."""
        self.text.close()
        self.store.dispose()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
