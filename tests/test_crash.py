"""Crash safety: ingest and annotate killed with SIGKILL at random moments, then finished.

The writers run in child processes (the real CLI and model) and are killed mid-run a few
times at seeded random moments; then the database, the Whoosh index, the vectors and the
files must agree as if nothing had happened. The last tests pin down bugs found and fixed:
each child there dies (or fails) at one chosen point instead of a random one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageOps

from hybrid_search.check import check, repair
from hybrid_search.collection import DB_NAME, SEMANTIC_MODEL, TEXT_INDEX_DIR, Collection
from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
from hybrid_search.settings import load_settings
from hybrid_search.text_index import TextIndex

pytestmark = pytest.mark.model

MODEL = "efficientnet-lite0"
SEED = 1729
ROUNDS = 5
STARTUP_ROUND = 2
VARIANTS = 28  # with the 12 demo photos: 40 files
# Made-up words, so that no ImageNet auto-tag or demo annotation contains them.
SIDECAR_WORDS = ("zorblax", "quimbly", "frabjous", "snarkle", "wibbleton",
                 "glorpnik", "flumox", "quazzle", "tragwort", "blivet")
ANNOTATE_ROUNDS = 3
LOOP_TITLE = re.compile(r"r\d+x\d+")  # titles the annotate loop writes: r<round>x<n>
# Re-titles photos one after another until killed; prints "ready" once the collection is open.
ANNOTATE_LOOP = """
import itertools, sys
from hybrid_search.collection import Collection
from hybrid_search.settings import load_settings

with Collection(load_settings(data_dir=sys.argv[1])) as collection:
    ids = sorted(collection.store.all_ids())
    print("ready", flush=True)
    for n in itertools.count():
        collection.annotate(ids[n % len(ids)], title=f"r{sys.argv[2]}x{n}")
"""
# Dies (as a kill would) after an annotation's database and Whoosh commits, before its meaning
# vector is recomputed.
ANNOTATE_THEN_DIE = """
import os, sys
from hybrid_search.collection import Collection
from hybrid_search.settings import load_settings

collection = Collection(load_settings(data_dir=sys.argv[1]))
Collection._refresh_semantic = lambda self, records: os._exit(9)
collection.annotate(int(sys.argv[2]), title="A bright red fire engine", description="",
                    tags=["fire engine"])
"""
# One Whoosh write fails after its database commit (as when another process holds the index
# lock past the timeout); a later write on the same thread succeeds; the process then exits.
FAIL_ONE_INDEX_WRITE = """
import sys
from hybrid_search.collection import Collection
from hybrid_search.exceptions import StorageError
from hybrid_search.settings import load_settings
from hybrid_search.text_index import TextIndex

upsert = TextIndex.upsert
def locked(self, docs):
    TextIndex.upsert = upsert
    raise StorageError("text index is locked by another writer (simulated)")
TextIndex.upsert = locked
with Collection(load_settings(data_dir=sys.argv[1])) as collection:
    first, second = sorted(collection.store.all_ids())[:2]
    try:
        collection.annotate(first, title="Zanzibar at dusk")
    except StorageError:
        pass
    collection.annotate(second, title="A later edit")
"""
CHILD_ENV = {"HYBRID_SEARCH_BATCH_SIZE": "4", "HYBRID_SEARCH_THREADS": "1"}


@dataclass
class Round:
    """What one killed (or finished) child run did to the collection."""

    after: int | None  # images to wait for before the delay; None: delay from the start
    seconds: float
    killed: bool
    stored_before: int
    stored_after: int
    markers: int

    def __str__(self) -> str:
        how = "killed" if self.killed else "finished"
        wait = "startup" if self.after is None else f"after +{self.after} images"
        return (f"{wait}, {how} at {self.seconds:.2f}s: images {self.stored_before} -> "
                f"{self.stored_after}, markers left {self.markers}")


def _env(**settings: str) -> dict[str, str]:
    """The environment of child processes: no user settings, small batches, one thread."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HYBRID_SEARCH_")}
    return {**env, **CHILD_ENV, **settings}


def _cli(data: Path, *args: str) -> list[str]:
    """The command line of a CLI child process."""
    return [sys.executable, "-m", "hybrid_search.cli", "--data-dir", str(data), *args]


def _run(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion in a child process."""
    return subprocess.run(_cli(data, *args), env=_env(), capture_output=True, text=True,
                          timeout=300, check=False)


def _make_photos(folder: Path) -> dict[Path, str]:
    """Demo photos plus crops, resizes and flips of them; returns each file's SHA-256."""
    folder.mkdir()
    sources = sorted(PHOTOS_DIR.iterdir())
    for src in sources:
        shutil.copyfile(src, folder / src.name)
    makers = (
        ("crop", "JPEG", lambda im: im.crop((im.width // 10, im.height // 10,
                                             im.width * 9 // 10, im.height * 9 // 10))),
        ("half", "PNG", lambda im: im.resize((im.width // 2, im.height // 2))),
        ("flip", "JPEG", ImageOps.mirror),
    )
    for n in range(VARIANTS):
        src = sources[n % len(sources)]
        label, fmt, make = makers[n // len(sources)]
        with Image.open(src) as im:
            variant = make(im.convert("RGB"))
        ext = ".jpg" if fmt == "JPEG" else ".png"
        variant.save(folder / f"{src.stem}-{label}{ext}", fmt)
    files = sorted(p for p in folder.iterdir() if p.suffix in {".png", ".jpg"})
    for n, word in enumerate(SIDECAR_WORDS):
        photo = files[n * 4]
        photo.with_name(photo.name + ".txt").write_text(
            f"Photo number {n}\ntags: {word}, crash test\nA {word} seen in a test photo.\n",
            encoding="utf-8",
        )
    hashes = {p.resolve(): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    assert len(set(hashes.values())) == len(files), "every file must have distinct bytes"
    return hashes


def _query(data: Path, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows from the collection's database, read with plain sqlite3 (read-only)."""
    with closing(sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True, timeout=5)) as db:
        return db.execute(sql, params).fetchall()


def _stored(data: Path) -> int:
    """Images committed so far (0 while the database does not exist yet)."""
    if not (data / DB_NAME).exists():
        return 0
    try:
        return int(_query(data, "SELECT COUNT(*) FROM images")[0][0])
    except sqlite3.Error:
        return 0


@dataclass
class Stored:
    """What the database holds about one file."""

    sha256: str
    annotations: list[tuple[Any, ...]]
    tags: list[tuple[Any, ...]]
    vectors: dict[str, np.ndarray]


def _snapshot(data: Path) -> dict[str, Stored]:
    """Everything the database holds about each image, keyed by the file it came from."""
    out = {}
    with closing(sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)) as db:
        for image_id, path, sha in db.execute("SELECT id, path, sha256 FROM images"):
            out[path] = Stored(
                sha,
                sorted(db.execute("SELECT field, value, source FROM annotations "
                                  "WHERE image_id = ?", (image_id,))),
                sorted(db.execute("SELECT tag, source FROM tags WHERE image_id = ?",
                                  (image_id,))),
                {model: np.frombuffer(vec, dtype=np.float32) for model, vec in db.execute(
                    "SELECT model, vector FROM embeddings WHERE image_id = ?", (image_id,))},
            )
    return out


def _markers(data: Path) -> list[Path]:
    """The journal markers of writers that have not finished."""
    folder = data / "journal"
    return sorted(folder.iterdir()) if folder.is_dir() else []


def _timed_run(photos: Path, data: Path, total: int) -> tuple[float, float]:
    """Seconds from start to the first committed batch, and to the end, of one full ingest."""
    start = time.monotonic()
    with subprocess.Popen(_cli(data, "ingest", str(photos)), env=_env(),
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        first = None
        while proc.poll() is None:
            if first is None and _stored(data) > 0:
                first = time.monotonic() - start
            time.sleep(0.02)
        end = time.monotonic() - start
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    assert _stored(data) == total
    return first or end, end


def _killed_ingest(args: list[str], data: Path, log: Path, *, after: int | None,
                   delay: float, limit: float) -> Round:
    """Run an ingest child and SIGKILL it `delay` seconds after it has committed `after` more
    images (or, with `after` None, `delay` seconds after it started)."""
    before = _stored(data)
    start = time.monotonic()
    with log.open("w") as err, subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL,
                                                stderr=err) as proc:
        if after is not None:
            while (proc.poll() is None and _stored(data) < before + after
                   and time.monotonic() - start < limit):
                time.sleep(0.005)
        try:
            proc.wait(timeout=delay)
            killed = False
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed = True
    assert killed or proc.returncode == 0, log.read_text()
    return Round(after, time.monotonic() - start, killed, before, _stored(data),
                 len(_markers(data)))


def _leftovers(data: Path) -> list[Path]:
    """Temporary files and half-built index directories anywhere under the data directory."""
    return sorted(
        p for p in data.rglob("*")
        if p.name.endswith(".tmp") or p.name.startswith((".whoosh.rebuild-", ".whoosh.old-"))
    )


def test_ingest_killed_at_random_moments_then_finished(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    hashes = _make_photos(photos)
    total = len(hashes)
    first, full = _timed_run(photos, tmp_path / "measure", total)

    # Most rounds wait until the child has committed a few more images (so its model is
    # loaded and it is writing), then kill it at once (often between a batch's database commit
    # and its Whoosh commit) or a random moment later. One round kills during start-up instead:
    # imports, opening the collection (a rebuild of the index if a marker was left), loading
    # the model.
    data = tmp_path / "data"
    rng = random.Random(SEED)
    per_image = (full - first) / total
    rounds: list[Round] = []
    for n in range(ROUNDS):
        left = total - _stored(data)
        if n == STARTUP_ROUND or left < 2:
            after, delay = None, rng.uniform(0.3, 0.9 * first)
        else:
            after = rng.randint(1, max(1, left // 3))
            delay = 0.0 if n % 2 else rng.uniform(0, 2 * per_image)
        rounds.append(_killed_ingest(_cli(data, "ingest", str(photos)), data,
                                     tmp_path / f"round-{n}.log", after=after, delay=delay,
                                     limit=3 * full))
    summary = f"full run {full:.1f}s, first commit at {first:.1f}s; " + "; ".join(map(str, rounds))
    print(summary)
    assert sum(r.killed and r.stored_before < r.stored_after < total for r in rounds) >= 2, summary

    done = _run(data, "ingest", "--json", str(photos))
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["failed"] == [], report
    assert report["added"] == total - rounds[-1].stored_after, (report, summary)

    # A run that ended normally leaves no marker, and removed those of dead processes.
    assert _markers(data) == [], summary
    assert _leftovers(data) == [], summary

    # Every file stored once, each with one vector of the active model.
    rows = _query(data, "SELECT id, sha256 FROM images")
    db_ids = {int(i) for i, _ in rows}
    assert sorted(sha for _, sha in rows) == sorted(hashes.values())
    assert _query(data, "SELECT sha256 FROM images GROUP BY sha256 HAVING COUNT(*) > 1") == []
    vectors = _query(
        data,
        "SELECT images.id, COUNT(embeddings.image_id) FROM images LEFT JOIN embeddings "
        "ON embeddings.image_id = images.id AND embeddings.model = ? GROUP BY images.id",
        MODEL,
    )
    assert {n for _, n in vectors} == {1}, vectors
    paths = {str(p) for (p,) in _query(data, "SELECT path FROM images")}
    assert paths == {str(p) for p in hashes}

    # The same rows as the uninterrupted run stored (vectors up to float noise: the batches
    # were cut differently).
    expected, got = _snapshot(tmp_path / "measure"), _snapshot(data)
    assert got.keys() == expected.keys()
    for path, want in expected.items():
        have = got[path]
        assert (have.sha256, have.annotations, have.tags) == (
            want.sha256, want.annotations, want.tags), path
        assert have.vectors.keys() == want.vectors.keys(), path
        for model, vec in want.vectors.items():
            np.testing.assert_allclose(have.vectors[model], vec, atol=1e-5, err_msg=path)

    # One Whoosh document per image, read from the index as the last run left it.
    with TextIndex(data / TEXT_INDEX_DIR) as index:
        assert index.ids() == db_ids
        assert index.doc_count() == len(db_ids)

    stats = _run(data, "stats", "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["images"] == total
    assert json.loads(stats.stdout)["vectors"] == total
    verdict = _run(data, "check")
    assert verdict.returncode == 0, verdict.stderr
    assert verdict.stdout.startswith("ok")

    with Collection(load_settings(data_dir=data, env={})) as collection:
        assert check(collection) == []
        assert _markers(data) == []
        by_path = {str(p): i for i, p in _query(data, "SELECT id, path FROM images")}
        for n, word in enumerate(SIDECAR_WORDS):
            photo_id = by_path[str(sorted(hashes)[n * 4])]
            assert [i for i, _ in collection.text.search(word, 5)] == [photo_id], word
    assert _leftovers(data) == []


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data directory with the annotated demo photos, ingested once; copy it to change it."""
    data = tmp_path_factory.mktemp("crash-demo") / "data"
    done = _run(data, "ingest", "--annotations", str(ANNOTATIONS_CSV), str(PHOTOS_DIR))
    assert done.returncode == 0, done.stderr
    return data


def test_annotate_killed_at_random_moments(demo_dir: Path, tmp_path: Path) -> None:
    # Without meaning vectors (they have their own test below) the loop spends its time in
    # database and index writes, where the journal marker matters.
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    rng = random.Random(SEED)
    log = []
    for n in range(ANNOTATE_ROUNDS):
        with subprocess.Popen([sys.executable, "-c", ANNOTATE_LOOP, str(data), str(n)],
                              env=_env(HYBRID_SEARCH_SEMANTIC="false"), stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True) as proc:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
            delay = rng.uniform(0.2, 1.0)
            time.sleep(delay)
            assert proc.poll() is None, "the annotate loop stopped on its own"
            proc.send_signal(signal.SIGKILL)
        log.append(f"killed {delay:.2f}s after open, markers left {len(_markers(data))}")
    print("; ".join(log))

    with Collection(load_settings(data_dir=data, env={})) as collection:
        assert _markers(data) == []
        assert all(p.repairable for p in check(collection))
        records = collection.store.get_many(sorted(collection.store.all_ids()))
        titles = {r.title: r.id for r in records if LOOP_TITLE.fullmatch(r.title)}
        assert titles, "no annotation was committed before the kills"
        # The index holds each photo's latest title, and no title overwritten since.
        indexed = {t for t in collection.text.vocabulary() if LOOP_TITLE.fullmatch(t)}
        assert indexed == set(titles), log
        for title, image_id in titles.items():
            assert [i for i, _ in collection.text.search(f"title:{title}", 5)] == [image_id]
        assert repair(collection) == []


def test_annotate_killed_before_meaning_vector_is_refreshed(demo_dir: Path,
                                                            tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    (image_id,) = (i for (i,) in _query(data, "SELECT id FROM images WHERE filename = ?",
                                         "cameraman.png"))
    died = subprocess.run([sys.executable, "-c", ANNOTATE_THEN_DIE, str(data), str(image_id)],
                          env=_env(), capture_output=True, text=True, timeout=120, check=False)
    assert died.returncode == 9, died.stderr

    with Collection(load_settings(data_dir=data, env={})) as collection:
        record = collection.get(image_id)
        assert record.title == "A bright red fire engine"
        assert [i for i, _ in collection.text.search("engine", 5)] == [image_id]
        # Whatever was left, `check --repair` must end with the meaning of the new words.
        assert repair(collection) == []
        stored = collection.store.vector(image_id, SEMANTIC_MODEL)
        assert stored is not None
        fresh = collection.text_embedder.encode_texts([record.annotation_text])[0]
        assert float(stored[0] @ fresh) > 0.99, "the meaning vector is the old annotation's"


def test_failed_index_write_is_not_forgotten_by_the_next_write(demo_dir: Path,
                                                               tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(demo_dir, data)
    child = subprocess.run([sys.executable, "-c", FAIL_ONE_INDEX_WRITE, str(data)],
                           env=_env(HYBRID_SEARCH_SEMANTIC="false"), capture_output=True,
                           text=True, timeout=120, check=False)
    assert child.returncode == 0, child.stderr

    with Collection(load_settings(data_dir=data, env={})) as collection:
        first = min(collection.store.all_ids())
        assert collection.get(first).title == "Zanzibar at dusk"
        assert [i for i, _ in collection.text.search("zanzibar", 5)] == [first]
