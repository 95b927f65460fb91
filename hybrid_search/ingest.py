"""Adding photos to a collection: find files, hash, decode, embed in batches, store.

Reading, hashing, decoding and preprocessing run in worker threads, the model runs batches
on the calling thread, and database and index writes run on a writer thread, so the three
overlap. Each batch is written in one database transaction: a crash loses at most the batch
in flight, never half an image. Known content (same SHA-256) is skipped, so running ingest
again is harmless.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .annotations import Annotations, find_sidecar, load_annotation_file
from .collection import SEMANTIC_MODEL, Collection
from .decode import EXTENSIONS, decode_image
from .embedding import encode_batch
from .exceptions import AnnotationError, ImageDecodeError
from .storage import NewImage, annotation_text, clean_tags

__all__ = [
    "IngestReport",
    "add_upload",
    "collect_files",
    "embed_missing",
    "ingest",
    "prepare_bytes",
    "safe_filename",
    "stored_id",
]

Progress = Callable[[int, int], None]
MAX_WRITE_BATCH = 256


@dataclass
class IngestReport:
    """What one ingest run did."""

    added: list[tuple[str, int]] = field(default_factory=list)
    duplicates: list[tuple[str, int | None]] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    unmatched_annotations: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready summary."""
        return {
            "added": len(self.added),
            "duplicates": len(self.duplicates),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "unmatched_annotations": self.unmatched_annotations,
            "seconds": round(self.seconds, 3),
        }


@dataclass
class _Prepared:
    path: str
    item: NewImage
    array: np.ndarray


@dataclass
class _Skipped:
    path: str
    duplicate_of: int | None = None
    reason: str | None = None


def collect_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Image files under the given files and folders (recursive, symlinks followed).

    A file named explicitly is taken whatever its extension; in folders only files with an
    image extension are. Returns the files (each once) and the paths that could not be read.
    """
    files: dict[Path, None] = {}
    failed: list[tuple[str, str]] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            failed.append((str(path), "no such file or directory"))
        elif path.is_file():
            files.setdefault(path.resolve(), None)
        elif path.is_dir():
            seen_dirs: set[tuple[int, int]] = set()
            for dirpath, dirnames, filenames in os.walk(path, followlinks=True):
                st = os.stat(dirpath)
                if (st.st_dev, st.st_ino) in seen_dirs:  # a symlink loop
                    dirnames[:] = []
                    continue
                seen_dirs.add((st.st_dev, st.st_ino))
                dirnames.sort()
                for name in sorted(filenames):
                    if Path(name).suffix.lower() in EXTENSIONS and not name.startswith("."):
                        p = Path(dirpath, name)
                        if p.is_file():
                            files.setdefault(p.resolve(), None)
        else:
            failed.append((str(path), "not a regular file or folder"))
    return list(files), failed


def prepare_bytes(
    data: bytes,
    *,
    name: str,
    path: str,
    collection: Collection,
    annotations: Annotations | None = None,
    sha256: str | None = None,
) -> tuple[NewImage, np.ndarray]:
    """Hash (unless the caller already did: `sha256`), decode and preprocess one image's
    bytes; ImageDecodeError if they are no image."""
    settings = collection.settings
    if len(data) > settings.max_upload_bytes:
        raise ImageDecodeError(
            name, f"file is {len(data)} bytes, over the limit of {settings.max_upload_bytes} "
            "(setting max_upload_bytes)"
        )
    decoded = decode_image(data, name=name, max_pixels=settings.max_image_pixels)
    array = collection.embedder.preprocess(decoded.image)
    ann = annotations or Annotations()
    item = NewImage(
        sha256=sha256 or hashlib.sha256(data).hexdigest(),
        path=path,
        filename=safe_filename(name),
        format=decoded.format,
        width=decoded.width,
        height=decoded.height,
        bytes=len(data),
        title=ann.title,
        description=ann.description,
        tags=clean_tags(ann.tags),
        model=collection.model_id,
    )
    return item, array


def ingest(
    collection: Collection,
    paths: Iterable[Path | str],
    *,
    annotations: Path | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
) -> IngestReport:
    """Add the images under `paths` to the collection and report what happened."""
    start = time.perf_counter()
    report = IngestReport()
    ann_map = load_annotation_file(annotations) if annotations is not None else {}
    files, report.failed = collect_files(paths)
    matched = {f for f in files if f in ann_map}
    report.unmatched_annotations = len(ann_map) - len(matched)
    total = len(files)
    known = collection.store.known_hashes()
    # Content being decoded now, by hash: a second file with the same bytes waits for the
    # first's outcome, so it is a duplicate only of something that will be stored.
    claimed: dict[str, threading.Event] = {}
    refused: dict[str, str] = {}
    claim_lock = threading.Lock()
    settings = collection.settings
    batch_size = int(settings.batch_size)
    done = 0

    def tick(n: int = 1) -> None:
        nonlocal done
        done += n
        if progress is not None:
            progress(done, total)

    def prepare(path: Path) -> _Prepared | _Skipped:
        name = str(path)
        try:
            size = path.stat().st_size
            if size > settings.max_upload_bytes:
                return _Skipped(name, reason=f"file is {size} bytes, over the limit of "
                                f"{settings.max_upload_bytes} (setting max_upload_bytes)")
            data = path.read_bytes()
        except OSError as e:
            return _Skipped(name, reason=f"cannot read: {e.strerror or e}")
        sha = hashlib.sha256(data).hexdigest()
        if sha in known:
            return _Skipped(name, duplicate_of=None)
        while True:
            with claim_lock:
                first = claimed.get(sha)
                if first is None:
                    claimed[sha] = threading.Event()
            if first is None:
                break
            # The earlier file was submitted first, so it is running: no deadlock.
            first.wait()
            if sha in refused:  # the bytes themselves are not an image we take
                return _Skipped(name, reason=refused[sha])
            with claim_lock:
                if claimed.get(sha) is first:
                    return _Skipped(name, duplicate_of=None)
            # The first was refused for its own annotations: these bytes get their turn.
        done_event = claimed[sha]
        try:
            ann = ann_map.get(path) or find_sidecar(path)
            item, array = prepare_bytes(data, name=name, path=name, collection=collection,
                                        annotations=ann, sha256=sha)
        except ImageDecodeError as e:
            refused[sha] = e.reason
            return _Skipped(name, reason=e.reason)
        except AnnotationError as e:
            with claim_lock:
                del claimed[sha]
            return _Skipped(name, reason=str(e))
        finally:
            done_event.set()
        return _Prepared(name, item, array)

    # The writer thread owns every database and index write, so they overlap the model.
    writes: queue.Queue[list[_Prepared] | None] = queue.Queue(maxsize=8)
    write_error: list[BaseException] = []

    def writer() -> None:
        done = False
        while not done:
            batch = writes.get()
            if batch is None:
                return
            # Take whatever else is waiting, so a slow commit makes the next one bigger
            # rather than letting the model wait: fewer, larger transactions and commits.
            while len(batch) < MAX_WRITE_BATCH:
                try:
                    more = writes.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    done = True
                    break
                batch = batch + more
            if write_error:
                continue
            try:
                ids = collection.add([p.item for p in batch])
            except BaseException as e:  # surfaced on the calling thread below
                write_error.append(e)
                continue
            for p, i in zip(batch, ids, strict=True):
                if i is None:
                    report.duplicates.append((p.path, collection.store.id_for_hash(p.item.sha256)))
                else:
                    report.added.append((p.path, i))

    def embed(batch: list[_Prepared]) -> None:
        items = embed_items(collection, [p.item for p in batch],
                            np.stack([p.array for p in batch]))
        writes.put([_Prepared(p.path, it, p.array[:0]) for p, it in zip(batch, items,
                                                                        strict=True)])
        tick(len(batch))

    writer_thread = threading.Thread(target=writer, name="ingest-writer", daemon=True)
    writer_thread.start()
    n_workers = workers or max(1, min(4, os.cpu_count() or 1))
    pending: list[_Prepared] = []
    try:
        with ThreadPoolExecutor(n_workers, thread_name_prefix="ingest-decode") as pool:
            for result in _bounded_map(pool, prepare, files, window=4 * batch_size):
                if write_error:
                    break
                if isinstance(result, _Skipped):
                    if result.reason is not None:
                        report.failed.append((result.path, result.reason))
                    else:
                        report.duplicates.append((result.path, None))
                    tick()
                    continue
                pending.append(result)
                if len(pending) >= batch_size:
                    embed(pending)
                    pending = []
            if pending and not write_error:
                embed(pending)
    finally:
        writes.put(None)
        writer_thread.join()
    if write_error:
        raise write_error[0]
    # Fill in ids of duplicates of content stored before this run.
    report.duplicates = [
        (p, i if i is not None else stored_id(collection, p)) for p, i in report.duplicates
    ]
    report.seconds = time.perf_counter() - start
    return report


def embed_items(
    collection: Collection, items: Sequence[NewImage], arrays: np.ndarray
) -> list[NewImage]:
    """Items with every vector and machine-made tag the collection's settings ask for.

    One forward pass gives the image vectors and, for the CNN, ImageNet logits; the logits
    give the auto-tags and the zero-shot (ConSE) vectors; annotated items also get a meaning
    vector of their words (MiniLM).
    """
    settings = collection.settings
    enc = encode_batch(collection.embedder, arrays)
    extra: list[list[tuple[str, np.ndarray, float]]] = [[] for _ in items]
    auto: list[tuple[tuple[str, float], ...]] = [() for _ in items]
    if enc.logits is not None:
        zero_shot, tags = _from_logits(collection, enc.logits)
        if zero_shot is not None:
            model, vectors = zero_shot
            for n, v in enumerate(vectors):
                extra[n].append((model, v, 1.0))
        if tags is not None:
            auto = tags
    if settings.semantic:
        texts = [(n, annotation_text(it.title, it.description, it.tags))
                 for n, it in enumerate(items)]
        texts = [(n, t) for n, t in texts if t]
        if texts:
            vecs = collection.text_embedder.encode_texts([t for _, t in texts])
            for (n, _), v in zip(texts, vecs, strict=True):
                extra[n].append((SEMANTIC_MODEL, v, 1.0))
    return [
        replace(it, vector=enc.vectors[n], norm=float(enc.norms[n]),
                extra_vectors=tuple(extra[n]), auto_tags=auto[n])
        for n, it in enumerate(items)
    ]


def _from_logits(
    collection: Collection, logits: np.ndarray
) -> tuple[tuple[str, np.ndarray] | None, list[tuple[tuple[str, float], ...]] | None]:
    """What a batch's ImageNet logits give, as the settings ask: the zero-shot vectors (with
    their model id) and the machine-made tags; None for what is switched off."""
    settings = collection.settings
    zero_shot = None
    if settings.zero_shot:
        conse = collection.conse
        zero_shot = (str(conse.model_id), conse.image_vectors(logits))
    tags = None
    if settings.auto_tags and settings.auto_tag_max > 0:
        from .zeroshot import auto_tags

        found = auto_tags(logits, float(settings.auto_tag_threshold), int(settings.auto_tag_max))
        tags = [tuple(t) for t in found]
    return zero_shot, tags


def stored_id(collection: Collection, path: Path | str) -> int | None:
    """The id of the stored image with the same bytes as the file at `path`, if any."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    return collection.store.id_for_hash(hashlib.sha256(data).hexdigest())


def _bounded_map(
    pool: ThreadPoolExecutor,
    fn: Callable[[Path], _Prepared | _Skipped],
    items: list[Path],
    window: int,
) -> Iterator[_Prepared | _Skipped]:
    """pool.map in order, with at most `window` items in flight (bounded memory)."""
    futures: deque[Future[_Prepared | _Skipped]] = deque()
    it = iter(items)
    for item in it:
        futures.append(pool.submit(fn, item))
        if len(futures) >= window:
            break
    while futures:
        result = futures.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            futures.append(pool.submit(fn, nxt))
        yield result





def embed_missing(
    collection: Collection, progress: Progress | None = None
) -> tuple[int, list[tuple[str, str]]]:
    """Compute every vector the active settings need and a stored image lacks.

    That is the image model's vectors, the zero-shot vectors and the annotation-meaning
    vectors; after switching model this re-embeds the collection. Resumable: vectors are
    written batch by batch, and each run starts from what is still missing. Images are read
    from the path they were ingested from. Returns (images embedded, failures).
    """
    settings = collection.settings
    visual = collection.visual_model_id if not collection.is_clip else None
    need_pixels = set(collection.store.ids_without_vector(collection.model_id))
    if visual is not None:
        need_pixels |= set(collection.store.ids_without_vector(visual))
    failed: list[tuple[str, str]] = []
    done = 0
    batch_size = int(settings.batch_size)
    records = collection.store.get_many(sorted(need_pixels))
    total = len(records)
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        arrays, kept = [], []
        for rec in chunk:
            try:
                data = Path(rec.path).read_bytes()
                _, array = prepare_bytes(data, name=rec.path, path=rec.path,
                                         collection=collection)
            except OSError as e:
                failed.append((rec.path, f"cannot read: {e.strerror or e}"))
                continue
            except ImageDecodeError as e:
                failed.append((rec.path, e.reason))
                continue
            arrays.append(array)
            kept.append(rec)
        if arrays:
            enc = encode_batch(collection.embedder, np.stack(arrays))
            collection.set_vectors(collection.model_id, [
                (r.id, v, float(n)) for r, v, n in zip(kept, enc.vectors, enc.norms, strict=True)
            ])
            if enc.logits is not None:
                zero_shot, tags = _from_logits(collection, enc.logits)
                if zero_shot is not None:
                    model, vectors = zero_shot
                    collection.set_vectors(model, [
                        (r.id, v, 1.0) for r, v in zip(kept, vectors, strict=True)
                    ])
                if tags is not None:
                    for r, t in zip(kept, tags, strict=True):
                        if not r.auto_tags:
                            collection.set_auto_tags(r.id, t)
            done += len(kept)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    collection.fill_missing_semantic()
    return done, failed


def add_upload(
    collection: Collection,
    data: bytes,
    filename: str,
    annotations: Annotations | None = None,
) -> tuple[int, bool]:
    """Store one uploaded image (bytes) with its annotations; returns (id, whether it is new).

    The bytes are kept in the data directory under their content hash (never the client's
    name), written to a temporary file and renamed into place, so a crash leaves no partial
    file. The client's file name is kept only as a label.
    """
    safe_name = safe_filename(filename)
    item, array = prepare_bytes(data, name=safe_name, path="", collection=collection,
                                annotations=annotations)
    existing = collection.store.id_for_hash(item.sha256)
    if existing is not None:
        return existing, False
    ext = "." + ("jpg" if item.format == "JPEG" else item.format.lower())
    target = collection.root / "originals" / item.sha256[:2] / (item.sha256 + ext)
    target.parent.mkdir(parents=True, exist_ok=True)
    created = not target.exists()
    if created:
        tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)
    item = replace(item, path=str(target), filename=safe_name)
    (item,) = embed_items(collection, [item], array[None, ...])
    try:
        (new_id,) = collection.add([item])
    except BaseException:
        if created:
            target.unlink(missing_ok=True)
        raise
    if new_id is None:  # stored concurrently by another request
        found = collection.store.id_for_hash(item.sha256)
        assert found is not None
        return found, False
    return new_id, True


def safe_filename(name: str) -> str:
    """A display file name: last path component, no control characters, at most 200 chars."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if ch.isprintable() and ch not in "\x00")
    base = base.strip().lstrip(".") or "upload"
    return base[:200]
