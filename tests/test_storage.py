"""Tests for the SQLite store and its Alembic schema."""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from hybrid_search.exceptions import NotFoundError, StorageError
from hybrid_search.storage import NewImage, Store, clean_tags, open_store

MODEL = "efficientnet-lite0"
OTHER = "clip:ViT-B-32"


def sha(n: int) -> str:
    """Return a fake content hash for image number n."""
    return hashlib.sha256(f"image-{n}".encode()).hexdigest()


def item(n: int, **kwargs: object) -> NewImage:
    """Return a NewImage for image number n."""
    base: dict[str, object] = {
        "sha256": sha(n),
        "path": f"/photos/{n}.jpg",
        "filename": f"{n}.jpg",
        "format": "JPEG",
        "width": 640 + n,
        "height": 480,
        "bytes": 1000 + n,
    }
    base.update(kwargs)
    return NewImage(**base)  # type: ignore[arg-type]


def unit(rng: np.random.Generator, dim: int = 8) -> np.ndarray:
    """Return a random float32 unit vector."""
    v = rng.standard_normal(dim).astype(np.float32)
    return (v / np.linalg.norm(v)).astype(np.float32)


def raw_rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run raw SQL on the database file, outside SQLAlchemy."""
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Return the database path."""
    return tmp_path / "db.sqlite"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    """Return an open store, disposed after the test."""
    s = open_store(db)
    yield s
    s.dispose()


# -- schema -------------------------------------------------------------------------------


def test_schema_created_by_alembic(store: Store, db: Path) -> None:
    assert raw_rows(db, "SELECT version_num FROM alembic_version") == [("0002",)]
    tables = {r[0] for r in raw_rows(db, "SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"images", "annotations", "tags", "embeddings", "changes",
            "alembic_version"} <= tables
    assert store.count() == 0


def test_deleted_ids_are_never_reused(store: Store) -> None:
    (first,) = store.add_images([NewImage("a" * 64, "/p/a.jpg", "a.jpg", "JPEG", 1, 1, 1)])
    store.remove([first])
    (second,) = store.add_images([NewImage("b" * 64, "/p/b.jpg", "b.jpg", "JPEG", 1, 1, 1)])
    assert second == first + 1


def test_upgrade_from_0001_keeps_data(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from hybrid_search.storage import MIGRATIONS_DIR

    db = tmp_path / "old.db"
    engine = create_engine(f"sqlite:///{db}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.exec_driver_sql(
            "INSERT INTO images (id, sha256, path, filename, format, width, height, bytes, "
            "added_at) VALUES (7, 'abc', '/x.jpg', 'x.jpg', 'JPEG', 1, 1, 1, '2026-01-01')")
        conn.exec_driver_sql("INSERT INTO annotations (image_id, field, value, source) "
                             "VALUES (7, 'title', 'Old title', 'manual')")
        conn.exec_driver_sql("INSERT INTO tags (image_id, tag, source) VALUES (7, 'old', 'manual')")
        conn.exec_driver_sql("INSERT INTO embeddings (image_id, model, dim, vector) "
                             "VALUES (7, 'm', 1, x'0000803f')")
    engine.dispose()
    store = open_store(db)
    try:
        # Rebuilding the images table must not cascade into the rows that point at it.
        record = store.get(7)
        assert (record.filename, record.title, record.tags) == ("x.jpg", "Old title", ("old",))
        assert store.models() == {"m": 1}
        assert raw_rows(db, "SELECT version_num FROM alembic_version") == [("0002",)]
        assert raw_rows(db, "PRAGMA foreign_key_check") == []
    finally:
        store.dispose()


def test_change_log_lists_written_ids(store: Store) -> None:
    start = store.last_change()
    (a,) = store.add_images([NewImage("c" * 64, "/p/c.jpg", "c.jpg", "JPEG", 1, 1, 1)])
    store.annotate(a, title="hello")
    last, ids = store.changes_since(start)
    assert ids == {a} and last > start
    assert store.changes_since(last) == (last, set())


def test_open_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "db.sqlite"
    s = open_store(path)
    try:
        assert path.is_file()
    finally:
        s.dispose()


def test_reopen_is_noop(db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = open_store(db)
    [image_id] = s.add_images([item(1, title="Kept")])
    s.dispose()

    from alembic import command

    def boom(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("upgrade must not run on an up-to-date database")

    monkeypatch.setattr(command, "upgrade", boom)
    s = open_store(db)
    try:
        assert s.get(image_id).title == "Kept"
        assert s.count() == 1
    finally:
        s.dispose()
    assert raw_rows(db, "SELECT version_num FROM alembic_version") == [("0002",)]


def test_foreign_keys_enabled(store: Store) -> None:
    with store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_unusable_database_raises_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "db.sqlite"
    bad.write_bytes(b"this is not a sqlite database" * 200)
    with pytest.raises(StorageError, match="db.sqlite"):
        open_store(bad)


# -- adding -------------------------------------------------------------------------------


def test_add_images_returns_ids(store: Store) -> None:
    ids = store.add_images([item(1), item(2), item(3)])
    assert all(isinstance(i, int) for i in ids)
    assert len(set(ids)) == 3
    assert ids == sorted(ids)
    assert store.count() == 3
    assert store.all_ids() == set(ids)
    assert store.known_hashes() == {sha(1), sha(2), sha(3)}
    assert store.id_for_hash(sha(2)) == ids[1]
    assert store.id_for_hash(sha(99)) is None
    assert store.find_by_path("/photos/3.jpg") == [ids[2]]


def test_add_images_duplicate_hash_returns_none(store: Store) -> None:
    [first] = store.add_images([item(1, title="first")])
    ids = store.add_images([item(1, title="second", path="/elsewhere.jpg"), item(2)])
    assert ids[0] is None
    assert isinstance(ids[1], int)
    assert store.count() == 2
    assert store.get(first).title == "first"  # the original is untouched


def test_add_images_duplicate_within_batch(store: Store) -> None:
    ids = store.add_images([item(1), item(2), item(1, path="/copy.jpg")])
    assert ids[0] is not None and ids[1] is not None
    assert ids[2] is None
    assert store.count() == 2


def test_record_fields(store: Store) -> None:
    before = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=5)
    [i] = store.add_images([item(7)])
    rec = store.get(i)
    assert (rec.id, rec.sha256, rec.path, rec.filename) == (i, sha(7), "/photos/7.jpg", "7.jpg")
    assert (rec.format, rec.width, rec.height, rec.bytes) == ("JPEG", 647, 480, 1007)
    assert before <= rec.added_at <= dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert not rec.annotated
    d = rec.to_dict()
    assert d["id"] == i and d["tags"] == [] and d["added_at"] == rec.added_at.isoformat()


def test_annotations_round_trip(store: Store) -> None:
    [i] = store.add_images(
        [item(1, title="  A  red   car ", description="  Parked.\nOn a street.  ",
               tags=("Street", "red car", " street ", "", "RED  CAR"))]
    )
    rec = store.get(i)
    assert rec.title == "A red car"  # inner whitespace collapsed
    assert rec.description == "Parked.\nOn a street."  # only stripped
    assert rec.tags == ("street", "red car")
    assert rec.annotated


def test_clean_tags() -> None:
    assert clean_tags(["Beach", "beach", " BEACH ", "sun  set", "", "  ", "Sea"]) == (
        "beach",
        "sun set",
        "sea",
    )
    assert clean_tags([]) == ()


# -- annotate -----------------------------------------------------------------------------


def test_annotate(store: Store) -> None:
    [i] = store.add_images([item(1, title="Old", description="Desc", tags=("a", "b"))])
    rec = store.annotate(i, title="New")
    assert (rec.title, rec.description, rec.tags) == ("New", "Desc", ("a", "b"))

    rec = store.annotate(i, tags=["X", "y", "x"])
    assert rec.tags == ("x", "y")

    rec = store.annotate(i, add_tags=["Z", "y"], remove_tags=["X"])
    assert rec.tags == ("y", "z")

    rec = store.annotate(i, tags=[], add_tags=["only"])
    assert rec.tags == ("only",)

    rec = store.annotate(i, title="", description="")
    assert (rec.title, rec.description) == ("", "")
    assert store.get(i) == rec
    assert rec.tags == ("only",)

    rec = store.annotate(i, remove_tags=["ONLY"])
    assert not rec.annotated
    assert store.get(i).tags == ()


def test_annotate_persists(store: Store, db: Path) -> None:
    [i] = store.add_images([item(1, title="T", tags=("one",))])
    store.annotate(i, title="", add_tags=["two"])
    assert raw_rows(db, "SELECT field FROM annotations WHERE image_id = ?", (i,)) == []
    assert sorted(raw_rows(db, "SELECT tag FROM tags WHERE image_id = ?", (i,))) == [
        ("one",),
        ("two",),
    ]


def test_annotate_unknown_id(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.annotate(12345, title="x")


def test_get_unknown_id(store: Store) -> None:
    store.add_images([item(1)])
    with pytest.raises(NotFoundError, match="999"):
        store.get(999)


def test_annotated_ids(store: Store) -> None:
    ids = store.add_images(
        [
            item(1, title="Title only"),
            item(2, description="Description only"),
            item(3, tags=("tag",)),
            item(4),
            item(5, title="   "),  # whitespace is no words
            item(6, title="cleared later"),
        ]
    )
    store.annotate(ids[5], title="")  # type: ignore[arg-type]
    assert store.annotated_ids() == {ids[0], ids[1], ids[2]}


def test_get_many_keeps_order_and_skips_unknown(store: Store) -> None:
    ids = store.add_images([item(n) for n in range(5)])
    wanted = [ids[3], 9999, ids[0], ids[4]]
    got = store.get_many(wanted)  # type: ignore[arg-type]
    assert [r.id for r in got] == [ids[3], ids[0], ids[4]]
    assert store.get_many([]) == []


def test_get_many_across_chunks(store: Store) -> None:
    ids = store.add_images([item(n) for n in range(520)])
    wanted = list(reversed(ids))
    assert [r.id for r in store.get_many(wanted)] == wanted  # type: ignore[arg-type]


def test_iter_records_in_id_order(store: Store) -> None:
    ids = store.add_images([item(n) for n in range(7)])
    assert [r.id for r in store.iter_records(batch=3)] == ids


# -- removing -----------------------------------------------------------------------------


def test_remove_cascades(store: Store, db: Path) -> None:
    rng = np.random.default_rng(0)
    keep, gone = store.add_images(
        [
            item(1, title="keep", tags=("k",), model=MODEL, vector=unit(rng)),
            item(2, title="gone", description="d", tags=("a", "b"), model=MODEL,
                 vector=unit(rng)),
        ]
    )
    store.set_vectors(OTHER, [(gone, unit(rng, 4), 2.0)])  # type: ignore[list-item]
    assert store.remove([gone, 424242]) == [gone]  # type: ignore[list-item]
    for table in ("annotations", "tags", "embeddings"):
        assert raw_rows(db, f"SELECT COUNT(*) FROM {table} WHERE image_id = ?", (gone,)) == [(0,)]
        assert raw_rows(db, f"SELECT COUNT(*) FROM {table} WHERE image_id = ?", (keep,)) != [
            (0,)
        ]
    assert raw_rows(db, "SELECT COUNT(*) FROM images WHERE id = ?", (gone,)) == [(0,)]
    assert store.count() == 1
    assert store.models() == {MODEL: 1}
    with pytest.raises(NotFoundError):
        store.get(gone)  # type: ignore[arg-type]
    assert store.remove([gone]) == []  # type: ignore[list-item]


# -- vectors ------------------------------------------------------------------------------


def test_load_vectors_exact(store: Store) -> None:
    rng = np.random.default_rng(1)
    vecs = [unit(rng) for _ in range(4)]
    norms = [3.25, 0.5, 12.75, 1.0]
    ids = store.add_images(
        [item(n, model=MODEL, vector=vecs[n], norm=norms[n]) for n in range(4)]
    )
    got_ids, matrix, got_norms = store.load_vectors(MODEL)
    assert got_ids.dtype == np.int64 and matrix.dtype == np.float32
    assert got_norms.dtype == np.float32
    assert got_ids.tolist() == ids
    assert matrix.shape == (4, 8)
    np.testing.assert_array_equal(matrix, np.stack(vecs))
    np.testing.assert_array_equal(got_norms, np.array(norms, dtype=np.float32))
    one = store.vector(ids[2], MODEL)  # type: ignore[arg-type]
    assert one is not None
    np.testing.assert_array_equal(one[0], vecs[2])
    assert one[1] == 12.75


def test_load_vectors_in_id_order_after_set_vectors(store: Store) -> None:
    rng = np.random.default_rng(2)
    ids = store.add_images([item(n) for n in range(5)])
    vecs = {i: unit(rng) for i in ids}
    # Written in reverse order; loaded in id order.
    store.set_vectors(MODEL, [(i, vecs[i], 1.0) for i in reversed(ids)])  # type: ignore[misc]
    got_ids, matrix, _ = store.load_vectors(MODEL)
    assert got_ids.tolist() == sorted(ids)  # type: ignore[type-var]
    np.testing.assert_array_equal(matrix, np.stack([vecs[i] for i in sorted(ids)]))


def test_load_vectors_empty(store: Store) -> None:
    ids, matrix, norms = store.load_vectors(MODEL)
    assert ids.shape == (0,) and norms.shape == (0,)
    assert matrix.shape[0] == 0
    assert store.vector(1, MODEL) is None


def test_set_vectors_replaces(store: Store, db: Path) -> None:
    rng = np.random.default_rng(3)
    first, second = unit(rng), unit(rng)
    [i] = store.add_images([item(1, model=MODEL, vector=first, norm=2.0)])
    store.set_vectors(MODEL, [(i, second, 5.0)])  # type: ignore[list-item]
    got = store.vector(i, MODEL)  # type: ignore[arg-type]
    assert got is not None
    np.testing.assert_array_equal(got[0], second)
    assert got[1] == 5.0
    assert raw_rows(db, "SELECT COUNT(*) FROM embeddings") == [(1,)]


def test_models_kept_separate(store: Store) -> None:
    rng = np.random.default_rng(4)
    ids = store.add_images([item(n, model=MODEL, vector=unit(rng)) for n in range(3)])
    store.set_vectors(OTHER, [(ids[0], unit(rng, 4), 1.0)])  # type: ignore[list-item]
    assert store.models() == {MODEL: 3, OTHER: 1}
    a_ids, a, _ = store.load_vectors(MODEL)
    b_ids, b, _ = store.load_vectors(OTHER)
    assert a.shape == (3, 8) and b.shape == (1, 4)
    assert b_ids.tolist() == [ids[0]]
    assert store.ids_without_vector(OTHER) == ids[1:]
    assert store.ids_without_vector(MODEL) == []


def test_add_image_without_model_stores_no_vector(store: Store) -> None:
    rng = np.random.default_rng(5)
    [i] = store.add_images([item(1, vector=unit(rng))])  # model missing
    assert store.models() == {}
    assert store.ids_without_vector(MODEL) == [i]


def test_corrupt_vector_raises_storage_error(store: Store, db: Path) -> None:
    rng = np.random.default_rng(6)
    [i] = store.add_images([item(1, model=MODEL, vector=unit(rng))])
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE embeddings SET vector = ? WHERE image_id = ?", (b"\x00" * 7, i))
        conn.commit()
    finally:
        conn.close()
    with pytest.raises(StorageError, match="corrupt"):
        store.load_vectors(MODEL)


# -- transactions -------------------------------------------------------------------------


def test_failed_batch_writes_nothing(store: Store, db: Path) -> None:
    rng = np.random.default_rng(7)
    store.add_images([item(0, title="before")])
    batch = [
        item(1, title="ok", tags=("t",), model=MODEL, vector=unit(rng)),
        item(2, title="ok too"),
        item(3, model=MODEL, vector=np.array(["not", "a", "vector"])),  # fails to convert
        item(4),
    ]
    with pytest.raises(ValueError):
        store.add_images(batch)
    assert store.count() == 1
    assert store.known_hashes() == {sha(0)}
    assert store.models() == {}
    assert raw_rows(db, "SELECT COUNT(*) FROM tags") == [(0,)]
    assert raw_rows(db, "SELECT COUNT(*) FROM annotations") == [(1,)]
    # The store is still usable and the same items can be added afterwards.
    ids = store.add_images(batch[:2])
    assert None not in ids
    assert store.count() == 3


def test_failed_set_vectors_writes_nothing(store: Store) -> None:
    rng = np.random.default_rng(8)
    [i] = store.add_images([item(1)])
    with pytest.raises(ValueError):
        store.set_vectors(
            MODEL,
            [(i, unit(rng), 1.0), (i, np.array(["x"]), 1.0)],  # type: ignore[list-item]
        )
    assert store.models() == {}
