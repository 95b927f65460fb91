"""`check` and `check --repair`: each kind of damage to a data directory is found and fixed.

The annotated demo photos are ingested once per module (real model); every test damages its
own copy of the data directory and of the photos, so tests stay independent.
"""

from __future__ import annotations

import gc
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result

from hybrid_search.check import Problem, check, repair
from hybrid_search.cli import main
from hybrid_search.collection import (
    DB_NAME,
    SEMANTIC_MODEL,
    TEXT_INDEX_DIR,
    THUMBS_DIR,
    Collection,
)
from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
from hybrid_search.search import SearchRequest, search
from hybrid_search.settings import load_settings
from hybrid_search.text_index import TextDoc, TextIndex

pytestmark = pytest.mark.model

MODEL = "efficientnet-lite0"
# Dies (as a kill would) once a rebuilt index is complete, before it is swapped into place.
KILLED_REINDEX = """
import os, sys
from hybrid_search.collection import Collection
from hybrid_search.settings import load_settings
from hybrid_search.text_index import TextIndex

TextIndex._swap_in = lambda self, fresh_dir: os._exit(9)
with Collection(load_settings(data_dir=sys.argv[1])) as collection:
    collection.reindex()
"""
UNKNOWN_SHA = "ab" + "0123456789abcdef" * 3 + "0123456789ab0000"


@dataclass
class Site:
    """A test's own data directory and the photo folder its database points at."""

    data: Path
    photos: Path

    def db(self) -> sqlite3.Connection:
        """A plain sqlite3 connection to the collection's database (no foreign keys)."""
        return sqlite3.connect(self.data / DB_NAME)

    def image_id(self, filename: str) -> int:
        """The id of the image ingested from a file of this name."""
        with closing(self.db()) as db:
            return int(db.execute("SELECT id FROM images WHERE filename = ?",
                                  (filename,)).fetchone()[0])

    def collection(self) -> Collection:
        """The collection, opened with default settings."""
        return Collection(load_settings(data_dir=self.data, env={}))


def _cli(data: Path, *args: str) -> Result:
    """Run the CLI in-process, isolated from HYBRID_SEARCH_* variables of the environment."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("HYBRID_SEARCH_")}
    return CliRunner().invoke(main, ["--data-dir", str(data), *args], env=env)


def _ok(data: Path, *args: str) -> Result:
    """A `check` that must pass."""
    result = _cli(data, "check", *args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("ok:"), result.output
    return result


def _problems(data: Path, *args: str) -> list[str]:
    """The problem lines of a `check` that must fail."""
    result = _cli(data, "check", *args)
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    return [line for line in result.stderr.splitlines() if line.startswith("problem: ")]


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    child = subprocess.Popen(["true"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        os.kill(child.pid, 0)
    return child.pid


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Site:
    """The demo photos and their annotations, ingested once through the CLI."""
    root = tmp_path_factory.mktemp("check-demo")
    shutil.copytree(PHOTOS_DIR, root / "photos")
    shutil.copyfile(ANNOTATIONS_CSV, root / "annotations.csv")
    data = root / "data"
    result = _cli(data, "ingest", "--annotations", str(root / "annotations.csv"),
                  str(root / "photos"))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("added 12, duplicates 0, failed 0"), result.output
    return Site(data, (root / "photos").resolve())


@pytest.fixture
def site(built: Site, tmp_path: Path) -> Site:
    """This test's own copy of the data directory, pointing at its own copy of the photos."""
    mine = Site(tmp_path / "data", tmp_path / "photos")
    shutil.copytree(built.data, mine.data)
    shutil.copytree(built.photos, mine.photos)
    with closing(mine.db()) as db, db:
        for image_id, path in db.execute("SELECT id, path FROM images").fetchall():
            moved = mine.photos.resolve() / Path(path).relative_to(built.photos)
            db.execute("UPDATE images SET path = ? WHERE id = ?", (str(moved), image_id))
    return mine


@pytest.fixture
def opened(site: Site) -> Iterator[Collection]:
    """The test's collection, open."""
    with site.collection() as collection:
        yield collection


def _vector(site: Site, image_id: int, model: str) -> np.ndarray | None:
    """One stored vector, read with sqlite3."""
    with closing(site.db()) as db:
        row = db.execute("SELECT vector FROM embeddings WHERE image_id = ? AND model = ?",
                         (image_id, model)).fetchone()
    return None if row is None else np.frombuffer(row[0], dtype=np.float32)


def _models(site: Site) -> set[str]:
    """The models that have vectors in the database."""
    with closing(site.db()) as db:
        return {m for (m,) in db.execute("SELECT DISTINCT model FROM embeddings")}


def _found(collection: Collection, words: str) -> list[int]:
    """Ids the keyword index finds for `words`."""
    return [i for i, _ in collection.text.search(words, 20)]


# -- a clean collection ---------------------------------------------------------------------


def test_clean_collection_has_no_problems(site: Site) -> None:
    assert _ok(site.data).stdout.strip() == "ok: database, text index, vectors and files agree"
    _ok(site.data, "--quick")
    _ok(site.data, "--repair")
    with site.collection() as collection:
        assert check(collection) == []
        assert check(collection, quick=True) == []
        assert repair(collection) == []


def test_every_model_the_settings_need_has_vectors(site: Site) -> None:
    # The faults below delete vectors of these three models.
    models = _models(site)
    assert {MODEL, SEMANTIC_MODEL} < models
    assert len(models) == 3


# -- (a) the Whoosh index lost a document ---------------------------------------------------


def test_whoosh_doc_deleted_behind_the_database_is_rebuilt_on_open(site: Site) -> None:
    cat = site.image_id("cat.png")
    with TextIndex(site.data / TEXT_INDEX_DIR) as index:
        index.delete([cat])
        assert index.doc_count() == 11
    # The document count no longer matches the database, so opening the collection rebuilds.
    with site.collection() as collection:
        assert cat in _found(collection, "tabby")
        assert collection.text.ids() == collection.store.all_ids()
        assert check(collection) == []
    _ok(site.data)


def test_whoosh_doc_swapped_for_a_stray_one_is_reported_and_repaired(site: Site) -> None:
    # Same count as the database, so the open-time sync cannot notice; check compares ids.
    cat = site.image_id("cat.png")
    with TextIndex(site.data / TEXT_INDEX_DIR) as index:
        index.delete([cat])
        index.upsert([TextDoc(id=9999, title="ghost of a photo")])
    problems = _problems(site.data)
    assert problems == [
        f"problem: text index: 1 image not indexed (ids {cat})",
        "problem: text index: 1 indexed documents have no image (ids 9999)",
    ]
    _ok(site.data, "--repair")
    _ok(site.data)
    with site.collection() as collection:
        assert _found(collection, "ghost") == []
        assert cat in _found(collection, "tabby")


def test_whoosh_doc_deleted_while_open_is_reported_and_repaired(opened: Collection) -> None:
    cat = next(r.id for r in opened.store.iter_records() if r.filename == "cat.png")
    opened.text.delete([cat])
    assert check(opened) == [
        Problem("text index", f"1 image not indexed (ids {cat})"),
    ]
    assert repair(opened) == []
    assert opened.text.ids() == opened.store.all_ids()
    assert cat in _found(opened, "tabby")


# -- (b) vectors -----------------------------------------------------------------------------


def test_deleted_image_vector_is_reported_and_re_embedded_from_the_source(site: Site) -> None:
    coffee = site.image_id("coffee.png")
    before = _vector(site, coffee, MODEL)
    assert before is not None
    with closing(site.db()) as db, db:
        db.execute("DELETE FROM embeddings WHERE image_id = ? AND model = ?", (coffee, MODEL))
    assert _problems(site.data) == [
        f"problem: vectors: 1 images have no {MODEL} vector (ids {coffee})",
    ]
    _ok(site.data, "--repair")
    _ok(site.data)
    after = _vector(site, coffee, MODEL)
    assert after is not None
    np.testing.assert_allclose(after, before, atol=1e-5)  # computed again from coffee.png


@pytest.mark.parametrize("which", ["zero-shot", "meaning"])
def test_deleted_derived_vector_is_reported_and_recomputed(site: Site, which: str) -> None:
    coffee = site.image_id("coffee.png")
    model = SEMANTIC_MODEL if which == "meaning" else (_models(site) - {MODEL, SEMANTIC_MODEL}
                                                       ).pop()
    before = _vector(site, coffee, model)
    assert before is not None
    with closing(site.db()) as db, db:
        db.execute("DELETE FROM embeddings WHERE image_id = ? AND model = ?", (coffee, model))
    label = "annotated images have no meaning" if which == "meaning" else "images have no zero-shot"
    assert _problems(site.data) == [f"problem: vectors: 1 {label} vector (ids {coffee})"]
    _ok(site.data, "--repair")
    after = _vector(site, coffee, model)
    assert after is not None
    np.testing.assert_allclose(after, before, atol=1e-5)


def test_zero_shot_vectors_of_an_earlier_method_are_replaced(site: Site) -> None:
    # As after an upgrade that changed the ConSE parameters: the stored vectors carry the old
    # model id, so none of the current method exists yet.
    current = (_models(site) - {MODEL, SEMANTIC_MODEL}).pop()
    old = "conse-v1-minilm-l6-v2-prompt+gloss-k1000-t3-centred"
    assert current.startswith("conse-") and current != old
    cat = site.image_id("cat.png")
    with closing(site.db()) as db, db:
        db.execute("UPDATE embeddings SET model = ? WHERE model = ?", (old, current))
    problems = _problems(site.data)
    assert problems[0].startswith("problem: vectors: 12 images have no zero-shot vector")
    assert problems[1:] == [f"problem: vectors: 12 zero-shot vectors of an earlier method, "
                            f"no longer used ({old})"]
    with site.collection() as collection:  # searches work meanwhile, without that signal
        hit = search(collection, SearchRequest(text="a cat")).hits[0]
        assert hit.record.id == cat and hit.signals["visual"] is None
    _ok(site.data, "--repair")
    assert _models(site) == {MODEL, SEMANTIC_MODEL, current}
    with site.collection() as collection:
        assert collection.store.models()[current] == 12
        hit = search(collection, SearchRequest(text="a cat")).hits[0]
        assert hit.record.id == cat and hit.signals["visual"] is not None  # the new vectors


def test_broken_and_orphan_vectors_are_reported_and_dropped(site: Site) -> None:
    coffee = site.image_id("coffee.png")
    before = _vector(site, coffee, MODEL)
    with closing(site.db()) as db, db:  # sqlite3 leaves foreign keys off: orphans allowed
        db.execute("UPDATE embeddings SET vector = substr(vector, 1, 8) "
                   "WHERE image_id = ? AND model = ?", (coffee, MODEL))
        db.execute("INSERT INTO embeddings (image_id, model, dim, vector, norm) "
                   "VALUES (9999, ?, 2, zeroblob(8), 1.0)", (MODEL,))
    assert _problems(site.data) == [
        "problem: vectors: 1 vectors belong to no image",
        "problem: vectors: 1 vectors have the wrong length",
    ]
    _ok(site.data, "--repair")
    with closing(site.db()) as db:
        orphans = db.execute("SELECT COUNT(*) FROM embeddings WHERE image_id = 9999")
        assert orphans.fetchone() == (0,)
    after = _vector(site, coffee, MODEL)
    assert before is not None and after is not None
    np.testing.assert_allclose(after, before, atol=1e-5)


# -- (c) derived files -----------------------------------------------------------------------


def test_orphan_thumbnail_and_temporary_file_are_reported_and_removed(site: Site) -> None:
    with closing(site.db()) as db:
        (sha,) = db.execute("SELECT sha256 FROM images WHERE filename = 'cat.png'").fetchone()
    kept = site.data / THUMBS_DIR / sha[:2] / f"{sha}_320.jpg"
    orphan = site.data / THUMBS_DIR / "ab" / f"{UNKNOWN_SHA}_320.jpg"
    temporary = site.data / THUMBS_DIR / "ab" / ".x.tmp"
    for path in (kept, orphan, temporary):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\xff\xd8 not really a jpeg")
    assert sorted(_problems(site.data)) == [
        f"problem: derived files: leftover temporary file {temporary}",
        f"problem: derived files: orphan file {orphan}",
    ]
    _ok(site.data, "--repair")
    assert not orphan.exists() and not temporary.exists()
    assert kept.exists(), "a thumbnail of a stored image is not an orphan"
    _ok(site.data)


def test_directory_of_a_killed_rebuild_is_reported_and_removed(site: Site) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_SEARCH_")}
    died = subprocess.run([sys.executable, "-c", KILLED_REINDEX, str(site.data)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert died.returncode == 9, died.stderr
    (leftover,) = site.data.glob(f".{TEXT_INDEX_DIR}.rebuild-*")
    assert any(str(leftover) in line for line in _problems(site.data))
    _ok(site.data, "--repair")
    assert list(site.data.glob(f".{TEXT_INDEX_DIR}.*")) == []


# -- (d) a source file is gone ---------------------------------------------------------------


def test_missing_source_file_is_reported_and_cannot_be_repaired(site: Site) -> None:
    cat = site.image_id("cat.png")
    source = site.photos / "cat.png"
    source.unlink()
    expected = (f"problem: source files: image {cat}: {source.resolve()} is missing "
                "(cannot be repaired)")
    assert _problems(site.data) == [expected]
    assert _problems(site.data, "--repair") == [expected]
    _ok(site.data, "--quick")  # quick skips the per-file checks of sources


def test_missing_source_file_leaves_its_missing_vector_unrepaired(site: Site) -> None:
    cat = site.image_id("cat.png")
    with closing(site.db()) as db, db:
        db.execute("DELETE FROM embeddings WHERE image_id = ? AND model = ?", (cat, MODEL))
    (site.photos / "cat.png").unlink()
    problems = _problems(site.data, "--repair")
    assert f"problem: vectors: 1 images have no {MODEL} vector (ids {cat})" in problems
    assert any(p.startswith(f"problem: source files: image {cat}:") for p in problems)


# -- (e) a writer died between its database commit and its Whoosh commit ---------------------


def test_stale_journal_marker_makes_the_next_open_rebuild_the_index(site: Site) -> None:
    # What a writer killed after its database commit leaves: new words in the database, the
    # old ones in the index (document count unchanged), and its journal marker.
    cat = site.image_id("cat.png")
    with closing(site.db()) as db, db:
        db.execute("UPDATE annotations SET value = 'Zanzibar at dusk' "
                   "WHERE image_id = ? AND field = 'title'", (cat,))
    with site.collection() as collection:
        assert _found(collection, "zanzibar") == [], "without a marker nothing rebuilds"

    journal = site.data / "journal"
    marker = journal / f"{_dead_pid()}.1"
    marker.touch()
    with site.collection() as collection:
        assert not marker.exists()
        assert _found(collection, "zanzibar") == [cat]
        assert check(collection) == []
    assert list(journal.iterdir()) == []
    _ok(site.data)


def test_journal_marker_of_a_live_writer_is_left_alone(site: Site) -> None:
    cat = site.image_id("cat.png")
    with closing(site.db()) as db, db:
        db.execute("UPDATE annotations SET value = 'Zanzibar at dusk' "
                   "WHERE image_id = ? AND field = 'title'", (cat,))
    with subprocess.Popen(["sleep", "60"]) as writer:
        marker = site.data / "journal" / f"{writer.pid}.1"
        marker.touch()
        try:
            with site.collection() as collection:
                assert marker.exists(), "a running writer's marker was removed"
                assert _found(collection, "zanzibar") == []
        finally:
            writer.kill()
    with site.collection() as collection:  # the writer is gone now: its marker is stale
        assert not marker.exists()
        assert _found(collection, "zanzibar") == [cat]


# -- (f) the Whoosh directory is damaged -----------------------------------------------------


def _damage(folder: Path, how: str) -> None:
    """Break a Whoosh index directory in one of four ways."""
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if how == "toc":
        for path in files:
            if path.suffix == ".toc":
                path.write_bytes(b"this is not a table of contents" * 10)
    elif how == "segments":
        for path in files:
            if path.suffix == ".seg":
                path.write_bytes(os.urandom(path.stat().st_size or 64))
    elif how == "emptied":
        for path in files:
            path.unlink()
    else:  # garbage: nothing Whoosh would recognise
        for path in files:
            path.unlink()
        (folder / "_MAIN_7.toc").write_bytes(b"\x00" * 100)
        (folder / "junk.bin").write_bytes(os.urandom(500))


# Whoosh 2.7.4 leaves a file it fails to read open; collect it here, where that is expected.
WHOOSH_LEAKS = pytest.mark.filterwarnings(
    "ignore::pytest.PytestUnraisableExceptionWarning", "ignore::ResourceWarning"
)


@WHOOSH_LEAKS
@pytest.mark.parametrize("how", ["toc", "segments", "emptied", "garbage"])
def test_damaged_whoosh_directory_is_rebuilt_on_open(site: Site, how: str) -> None:
    _damage(site.data / TEXT_INDEX_DIR, how)
    cat = site.image_id("cat.png")
    with site.collection() as collection:
        assert collection.text.ids() == collection.store.all_ids()
        assert _found(collection, "tabby") == [cat]
        hits = search(collection, SearchRequest(text="tabby cat", limit=3)).hits
        assert hits[0].record.id == cat
        assert check(collection) == []
    gc.collect()
    _ok(site.data)


@WHOOSH_LEAKS
def test_whoosh_damaged_while_open_is_reported_and_repaired(opened: Collection) -> None:
    _damage(opened.root / TEXT_INDEX_DIR, "toc")
    problems = check(opened)
    assert [p.kind for p in problems] == ["text index"]
    assert problems[0].detail.startswith("unreadable"), problems
    assert repair(opened) == []
    assert _found(opened, "tabby") != []
    gc.collect()


def test_server_start_runs_the_quick_check(opened: Collection) -> None:
    from hybrid_search.web.server import startup_check

    assert startup_check(opened) == [
        "quick check: database, text index, vectors and files agree"]
    junk = opened.root / "thumbs" / "ab" / ("ab" + "0" * 62 + "_320.jpg")
    junk.parent.mkdir(parents=True, exist_ok=True)
    junk.write_bytes(b"x")
    lines = startup_check(opened)
    assert lines[0] == "quick check found 1 problem(s):" and str(junk) in lines[1]
    assert "check --repair" in lines[-1]
    junk.unlink()
