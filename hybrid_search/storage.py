"""The SQLite database: images, their annotations and tags, and their embeddings.

The database is the source of truth; the Whoosh index and the in-memory vector matrix are
derived from it. Alembic (`migrations/`) owns the schema; `open_store` upgrades it as needed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from sqlalchemy import (
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    Session,
    mapped_column,
    relationship,
    selectinload,
)

from .exceptions import AnnotationError, NotFoundError, StorageError

__all__ = [
    "Annotation",
    "Base",
    "Change",
    "Embedding",
    "ImageRecord",
    "ImageRow",
    "Store",
    "Tag",
    "annotation_text",
    "open_store",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
MANUAL = "manual"
AUTO = "auto"


class Base(DeclarativeBase):
    """Declarative base of every table."""


class ImageRow(Base):
    """One stored image, identified by the SHA-256 of its bytes."""

    __tablename__ = "images"
    __table_args__ = {"sqlite_autoincrement": True}

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), unique=True, nullable=False)
    path: Mapped[str] = mapped_column(Text, nullable=False)
    filename: Mapped[str] = mapped_column(Text, nullable=False)
    format: Mapped[str] = mapped_column(String(16), nullable=False)
    width: Mapped[int] = mapped_column(Integer, nullable=False)
    height: Mapped[int] = mapped_column(Integer, nullable=False)
    bytes: Mapped[int] = mapped_column(Integer, nullable=False)
    added_at: Mapped[dt.datetime] = mapped_column(nullable=False)

    annotations: Mapped[list[Annotation]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )
    tags: Mapped[list[Tag]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True,
        order_by="Tag.id",
    )
    embeddings: Mapped[list[Embedding]] = relationship(
        back_populates="image", cascade="all, delete-orphan", passive_deletes=True
    )


class Annotation(Base):
    """A title or description of an image, with where it came from."""

    __tablename__ = "annotations"
    __table_args__ = (UniqueConstraint("image_id", "field", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True, nullable=False
    )
    field: Mapped[str] = mapped_column(String(16), nullable=False)
    value: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default=MANUAL)

    image: Mapped[ImageRow] = relationship(back_populates="annotations")


class Tag(Base):
    """One tag of an image, with its source and (for machine-made tags) confidence."""

    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("image_id", "tag", "source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), index=True, nullable=False
    )
    tag: Mapped[str] = mapped_column(Text, nullable=False)
    source: Mapped[str] = mapped_column(String(16), nullable=False, default=MANUAL)
    confidence: Mapped[float | None] = mapped_column(Float, nullable=True)

    image: Mapped[ImageRow] = relationship(back_populates="tags")


class Embedding(Base):
    """An image's L2-normalised float32 vector under one model."""

    __tablename__ = "embeddings"

    image_id: Mapped[int] = mapped_column(
        ForeignKey("images.id", ondelete="CASCADE"), primary_key=True
    )
    model: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # Length of the raw feature vector before L2 normalisation, so that Euclidean distance
    # on the raw features can be computed from the stored unit vector.
    norm: Mapped[float] = mapped_column(Float, nullable=False, default=1.0)

    image: Mapped[ImageRow] = relationship(back_populates="embeddings")


class Change(Base):
    """One write to an image, so that other processes can bring their caches up to date."""

    __tablename__ = "changes"
    __table_args__ = {"sqlite_autoincrement": True}

    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    image_id: Mapped[int] = mapped_column(Integer, nullable=False)


CHANGES_KEPT = 100_000


@dataclass(frozen=True)
class ImageRecord:
    """A plain, session-free view of one image and its manual annotations."""

    id: int
    sha256: str
    path: str
    filename: str
    format: str
    width: int
    height: int
    bytes: int
    added_at: dt.datetime
    title: str
    description: str
    tags: tuple[str, ...]
    auto_tags: tuple[tuple[str, float], ...] = ()

    @property
    def annotation_text(self) -> str:
        """Title, tags and description as one text (for text embeddings)."""
        return annotation_text(self.title, self.description, self.tags)

    @property
    def annotated(self) -> bool:
        """Whether any words describe this image."""
        return bool(self.title or self.description or self.tags)

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "id": self.id,
            "sha256": self.sha256,
            "path": self.path,
            "filename": self.filename,
            "format": self.format,
            "width": self.width,
            "height": self.height,
            "bytes": self.bytes,
            "added_at": self.added_at.isoformat(),
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "auto_tags": [{"tag": t, "confidence": round(c, 4)} for t, c in self.auto_tags],
        }


@dataclass(frozen=True)
class NewImage:
    """Everything stored for one new image, written in a single transaction."""

    sha256: str
    path: str
    filename: str
    format: str
    width: int
    height: int
    bytes: int
    title: str = ""
    description: str = ""
    tags: tuple[str, ...] = ()
    model: str | None = None
    vector: np.ndarray | None = None
    norm: float = 1.0
    # Further vectors stored with the image: (model id, unit vector, raw norm).
    extra_vectors: tuple[tuple[str, np.ndarray, float], ...] = ()
    # Machine-made tags: (tag, confidence).
    auto_tags: tuple[tuple[str, float], ...] = ()


def annotation_text(title: str, description: str, tags: Sequence[str]) -> str:
    """Title, tags and description joined into one text, for sentence embeddings."""
    parts = [title.strip(), ", ".join(tags), description.strip()]
    return ". ".join(p for p in parts if p)


def _record(row: ImageRow) -> ImageRecord:
    manual = {a.field: a.value for a in row.annotations if a.source == MANUAL}
    return ImageRecord(
        id=row.id,
        sha256=row.sha256,
        path=row.path,
        filename=row.filename,
        format=row.format,
        width=row.width,
        height=row.height,
        bytes=row.bytes,
        added_at=row.added_at,
        title=manual.get("title", ""),
        description=manual.get("description", ""),
        tags=tuple(t.tag for t in row.tags if t.source == MANUAL),
        auto_tags=tuple(
            (t.tag, float(t.confidence or 0.0)) for t in row.tags if t.source == AUTO
        ),
    )


def clean_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """Strip, lower-case and de-duplicate tags, keeping their first-seen order."""
    seen: dict[str, None] = {}
    for tag in tags:
        t = " ".join(str(tag).split()).lower()
        if t:
            seen.setdefault(t, None)
    return tuple(seen)


def _set_sqlite_pragmas(dbapi_conn: object, _record: object) -> None:
    cur = dbapi_conn.cursor()  # type: ignore[attr-defined]
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.close()


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to Alembic's head revision."""
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    script = ScriptDirectory.from_config(cfg)
    with engine.connect() as conn:
        current = MigrationContext.configure(conn).get_current_revision()
    if current == script.get_current_head():
        return
    with engine.connect() as conn:
        # Migrations that rebuild a table (SQLite cannot alter one in place) drop the old
        # table; with foreign keys on, that drop would cascade into every row that points at
        # it. The pragma only takes effect outside a transaction, hence the commit first.
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        conn.commit()
        try:
            with conn.begin():
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise StorageError(f"schema upgrade left {len(broken)} dangling references")
        finally:
            conn.exec_driver_sql("PRAGMA foreign_keys=ON")
            conn.commit()


class Store:
    """Reads and writes the collection's database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def session(self) -> Session:
        """A new ORM session (use as a context manager)."""
        return Session(self.engine, expire_on_commit=False)

    # -- reading -------------------------------------------------------------------------
    def count(self) -> int:
        """How many images the collection holds."""
        with self.session() as s:
            return s.scalar(select(func.count(ImageRow.id))) or 0

    def id_for_hash(self, sha256: str) -> int | None:
        """The id of the image with these bytes, if stored."""
        with self.session() as s:
            return s.scalar(select(ImageRow.id).where(ImageRow.sha256 == sha256))

    def known_hashes(self) -> set[str]:
        """Every stored content hash."""
        with self.session() as s:
            return set(s.scalars(select(ImageRow.sha256)))

    def get(self, image_id: int) -> ImageRecord:
        """One image; NotFoundError if the id is unknown."""
        with self.session() as s:
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            return _record(row)

    def get_many(self, ids: Sequence[int]) -> list[ImageRecord]:
        """Images in the order of `ids`, skipping unknown ids."""
        if not ids:
            return []
        found: dict[int, ImageRecord] = {}
        with self.session() as s:
            for start in range(0, len(ids), 500):
                chunk = list(ids[start : start + 500])
                query = select(ImageRow).where(ImageRow.id.in_(chunk)).options(
                    selectinload(ImageRow.annotations), selectinload(ImageRow.tags))
                for row in s.scalars(query):
                    found[row.id] = _record(row)
        return [found[i] for i in ids if i in found]

    def find_by_path(self, path: str) -> list[int]:
        """Ids of images ingested from this path."""
        with self.session() as s:
            return list(s.scalars(select(ImageRow.id).where(ImageRow.path == path)))

    def iter_records(self, batch: int = 1000) -> Iterator[ImageRecord]:
        """Every image, in id order."""
        last = 0
        while True:
            with self.session() as s:
                query = select(ImageRow).where(ImageRow.id > last).order_by(ImageRow.id)
                rows = list(s.scalars(query.limit(batch)))
                records = [_record(r) for r in rows]
            if not records:
                return
            yield from records
            last = records[-1].id

    def all_ids(self) -> set[int]:
        """Every stored image id."""
        with self.session() as s:
            return set(s.scalars(select(ImageRow.id)))

    def annotated_ids(self) -> set[int]:
        """Ids of images with any manual title, description or tag."""
        with self.session() as s:
            ids = set(
                s.scalars(
                    select(Annotation.image_id).where(
                        Annotation.source == MANUAL, Annotation.value != ""
                    )
                )
            )
            ids.update(s.scalars(select(Tag.image_id).where(Tag.source == MANUAL)))
        return ids

    def load_vectors(self, model: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(ids, unit-vector matrix, raw norms) of every vector stored for `model`, by id."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(Embedding.image_id, Embedding.dim, Embedding.vector, Embedding.norm)
                .where(Embedding.model == model)
                .order_by(Embedding.image_id)
            ).all()
        if not rows:
            empty = np.zeros(0, dtype=np.float32)
            return np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), empty
        dim = rows[0][1]
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        norms = np.fromiter((r[3] for r in rows), dtype=np.float32, count=len(rows))
        matrix = np.empty((len(rows), dim), dtype=np.float32)
        for n, (image_id, d, blob, _) in enumerate(rows):
            if d != dim or len(blob) != 4 * dim:
                raise StorageError(f"embedding of image {image_id} under {model} is corrupt")
            matrix[n] = np.frombuffer(blob, dtype=np.float32)
        return ids, matrix, norms

    def vector(self, image_id: int, model: str) -> tuple[np.ndarray, float] | None:
        """One image's unit vector and raw norm under `model`, if stored."""
        with self.session() as s:
            row = s.get(Embedding, (image_id, model))
            if row is None:
                return None
            return np.frombuffer(row.vector, dtype=np.float32).copy(), row.norm

    def ids_without_vector(self, model: str) -> list[int]:
        """Images that have no vector under `model`."""
        with self.session() as s:
            have = select(Embedding.image_id).where(Embedding.model == model)
            return list(s.scalars(select(ImageRow.id).where(ImageRow.id.not_in(have))))

    def delete_vectors(self, model: str, ids: Iterable[int]) -> None:
        """Drop the vectors of these images under `model`."""
        ids = list(ids)
        with self.session() as s, s.begin():
            s.execute(delete(Embedding).where(Embedding.model == model,
                                              Embedding.image_id.in_(ids)))
            _log(s, ids)

    def models(self) -> dict[str, int]:
        """Vector counts per model id."""
        with self.session() as s:
            rows = s.execute(select(Embedding.model, func.count()).group_by(Embedding.model))
            return {m: n for m, n in rows}

    # -- writing -------------------------------------------------------------------------
    def add_images(self, items: Sequence[NewImage]) -> list[int | None]:
        """Store new images with annotations and vectors in one transaction.

        Returns each item's new id, or None where the same bytes were already stored.
        """
        ids: list[int | None] = []
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        with self.session() as s, s.begin():
            for item in items:
                if s.scalar(select(ImageRow.id).where(ImageRow.sha256 == item.sha256)):
                    ids.append(None)
                    continue
                row = ImageRow(
                    sha256=item.sha256,
                    path=item.path,
                    filename=item.filename,
                    format=item.format,
                    width=item.width,
                    height=item.height,
                    bytes=item.bytes,
                    added_at=now,
                )
                _apply_annotations(row, item.title, item.description, item.tags)
                vectors = list(item.extra_vectors)
                if item.vector is not None and item.model is not None:
                    vectors.insert(0, (item.model, item.vector, item.norm))
                for model, vector, norm in vectors:
                    vec = np.ascontiguousarray(vector, dtype=np.float32)
                    row.embeddings.append(
                        Embedding(model=model, dim=int(vec.shape[0]), vector=vec.tobytes(),
                                  norm=float(norm))
                    )
                manual = set(clean_tags(item.tags))
                for tag, conf in item.auto_tags:
                    if tag not in manual:
                        row.tags.append(Tag(tag=tag, source=AUTO, confidence=float(conf)))
                s.add(row)
                s.flush()
                ids.append(row.id)
            _log(s, [i for i in ids if i is not None])
        return ids

    def set_vectors(
        self, model: str, vectors: Iterable[tuple[int, np.ndarray, float]]
    ) -> None:
        """Store (or replace) (id, unit vector, raw norm) triples under `model`."""
        with self.session() as s, s.begin():
            changed = []
            for image_id, vec, norm in vectors:
                vec = np.ascontiguousarray(vec, dtype=np.float32)
                s.merge(Embedding(image_id=image_id, model=model, dim=int(vec.shape[0]),
                                  vector=vec.tobytes(), norm=float(norm)))
                changed.append(image_id)
            _log(s, changed)

    def annotate(
        self,
        image_id: int,
        *,
        title: str | None = None,
        description: str | None = None,
        tags: Iterable[str] | None = None,
        add_tags: Iterable[str] = (),
        remove_tags: Iterable[str] = (),
        drop_vectors: Sequence[str] = (),
    ) -> ImageRecord:
        """Change an image's manual annotations; None leaves a field as it is.

        `drop_vectors` names models whose vector of this image describes the old words: they
        are deleted in the same transaction, so a crash before they are recomputed leaves them
        missing (which `check --repair` fixes), never stale.
        """
        tags = None if tags is None else list(tags)
        add_tags = list(add_tags)
        for text in [title, description, *(tags or ()), *add_tags]:
            try:
                (text or "").encode("utf-8")
            except UnicodeEncodeError:
                raise AnnotationError("annotations must be valid text") from None
        with self.session() as s, s.begin():
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            _drop_vectors(s, image_id, drop_vectors)
            current = _record(row)
            new_tags = list(current.tags if tags is None else clean_tags(tags))
            new_tags.extend(clean_tags(add_tags))
            drop = set(clean_tags(remove_tags))
            _apply_annotations(
                row,
                current.title if title is None else title,
                current.description if description is None else description,
                tuple(t for t in clean_tags(new_tags) if t not in drop),
            )
            _log(s, [image_id])
            s.flush()
            s.refresh(row)
            return _record(row)

    def set_auto_tags(self, image_id: int, tags: Sequence[tuple[str, float]]) -> ImageRecord:
        """Replace an image's machine-made tags (a tag already given by hand is skipped)."""
        with self.session() as s, s.begin():
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            manual = {t.tag for t in row.tags if t.source == MANUAL}
            wanted = {t: c for t, c in tags if t not in manual}
            for obj in [t for t in row.tags if t.source == AUTO]:
                if obj.tag in wanted:
                    obj.confidence = float(wanted.pop(obj.tag))
                else:
                    row.tags.remove(obj)
            for tag, conf in wanted.items():
                row.tags.append(Tag(tag=tag, source=AUTO, confidence=float(conf)))
            _log(s, [image_id])
            s.flush()
            s.refresh(row)
            return _record(row)

    def review_auto_tag(
        self, image_id: int, tag: str, confirm: bool, drop_vectors: Sequence[str] = ()
    ) -> ImageRecord:
        """Confirm a machine-made tag (it becomes a manual tag) or reject it (it is removed)."""
        with self.session() as s, s.begin():
            row = s.get(ImageRow, image_id)
            if row is None:
                raise NotFoundError(f"no image with id {image_id}")
            if confirm:
                _drop_vectors(s, image_id, drop_vectors)
            found = [t for t in row.tags if t.source == AUTO and t.tag == tag]
            if not found:
                raise NotFoundError(f"image {image_id} has no machine-made tag {tag!r}")
            row.tags.remove(found[0])
            s.flush()
            if confirm and tag not in {t.tag for t in row.tags if t.source == MANUAL}:
                row.tags.append(Tag(tag=tag, source=MANUAL))
            _log(s, [image_id])
            s.flush()
            s.refresh(row)
            return _record(row)

    def remove(self, ids: Iterable[int]) -> list[int]:
        """Delete images (with annotations and vectors); returns the ids that existed."""
        ids = list(ids)
        with self.session() as s, s.begin():
            existing = list(s.scalars(select(ImageRow.id).where(ImageRow.id.in_(ids))))
            if existing:
                s.execute(delete(ImageRow).where(ImageRow.id.in_(existing)))
                _log(s, existing)
        return existing

    def last_change(self) -> int:
        """Sequence number of the latest logged change (0 when none)."""
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.max(Change.seq))).scalar() or 0)

    def changes_since(self, seq: int) -> tuple[int, set[int] | None]:
        """(latest seq, ids changed after `seq`); None for the ids if the log was pruned past
        `seq`, in which case the caller must reload everything."""
        with self.engine.connect() as conn:
            first, last = conn.execute(select(func.min(Change.seq), func.max(Change.seq))).one()
            if last is None or last <= seq:
                return seq if last is None else int(last), set()
            if first is not None and first > seq + 1:
                return int(last), None
            ids = set(conn.execute(select(Change.image_id).where(Change.seq > seq)).scalars())
            if last - (first or 0) > 2 * CHANGES_KEPT:
                conn.execute(delete(Change).where(Change.seq <= last - CHANGES_KEPT))
                conn.commit()
            return int(last), ids

    def vectors_for(self, model: str, ids: Iterable[int]) -> dict[int, tuple[np.ndarray, float]]:
        """Stored unit vectors and norms under `model` for some ids."""
        ids = list(ids)
        out: dict[int, tuple[np.ndarray, float]] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(ids), 500):
                rows = conn.execute(
                    select(Embedding.image_id, Embedding.vector, Embedding.norm).where(
                        Embedding.model == model, Embedding.image_id.in_(ids[start:start + 500]))
                )
                for image_id, blob, norm in rows:
                    out[int(image_id)] = (np.frombuffer(blob, dtype=np.float32).copy(), norm)
        return out

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def _drop_vectors(s: Session, image_id: int, models: Sequence[str]) -> None:
    """Delete an image's vectors under these models (inside the caller's transaction)."""
    if models:
        s.execute(delete(Embedding).where(Embedding.model.in_(list(models)),
                                          Embedding.image_id == image_id))


def _log(s: Session, ids: Iterable[int]) -> None:
    """Record changed image ids in the change log (inside the caller's transaction)."""
    rows = [{"image_id": int(i)} for i in ids]
    if rows:
        s.execute(Change.__table__.insert(), rows)


def _apply_annotations(row: ImageRow, title: str, description: str, tags: Sequence[str]) -> None:
    """Set the manual title, description and tags of a row (other sources untouched).

    Rows are updated in place rather than replaced: the unit of work inserts before it
    deletes, so a delete-and-reinsert would trip the unique constraints.
    """
    values = {"title": " ".join(title.split()), "description": description.strip()}
    existing = {a.field: a for a in row.annotations if a.source == MANUAL}
    for f, v in values.items():
        if f in existing and v:
            existing[f].value = v
        elif f in existing:
            row.annotations.remove(existing[f])
        elif v:
            row.annotations.append(Annotation(field=f, value=v, source=MANUAL))
    wanted = clean_tags(tags)
    current = {t.tag: t for t in row.tags if t.source == MANUAL}
    for tag, obj in current.items():
        if tag not in wanted:
            row.tags.remove(obj)
    for tag in wanted:
        if tag not in current:
            row.tags.append(Tag(tag=tag, source=MANUAL))
    # A machine-made tag that a person now gives by hand is theirs: drop the auto copy.
    for obj in [t for t in row.tags if t.source == AUTO and t.tag in wanted]:
        row.tags.remove(obj)


def open_store(db_path: Path) -> Store:
    """Open (creating and migrating as needed) the SQLite database at `db_path`."""
    try:
        db_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise StorageError(f"cannot create data directory {db_path.parent}: {e.strerror}") from None
    engine = create_engine(f"sqlite:///{db_path}")
    event.listen(engine, "connect", _set_sqlite_pragmas)
    try:
        migrate(engine)
    except OperationalError as e:
        engine.dispose()
        raise StorageError(f"database {db_path} is unusable: {e.orig}") from None
    except IntegrityError as e:  # pragma: no cover - schema damage
        engine.dispose()
        raise StorageError(f"database {db_path} failed to migrate: {e.orig}") from None
    except DatabaseError as e:
        engine.dispose()
        raise StorageError(f"database {db_path} is unusable: {e.orig}") from None
    return Store(engine)
