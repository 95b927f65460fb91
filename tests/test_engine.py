"""End-to-end tests of the core engine on the demo photos with the real bundled model."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from hybrid_search.cli import main
from hybrid_search.collection import Collection
from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
from hybrid_search.ingest import ingest
from hybrid_search.search import SearchRequest, search
from hybrid_search.settings import load_settings

pytestmark = pytest.mark.model


def crop_bytes(path: Path, frac: float = 0.1, scale: float = 0.5) -> bytes:
    """A JPEG of the photo cropped by `frac` on each side and scaled: a near-duplicate query."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        box = (int(w * frac), int(h * frac), int(w * (1 - frac)), int(h * (1 - frac)))
        im = im.crop(box).resize((max(16, int(w * scale)), max(16, int(h * scale))))
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=85)
        return buf.getvalue()


# These tests pin the keyword + image core; the words-to-meaning and words-to-pixels signals
# (issue 4) have their own tests in test_language.py.
CORE_ONLY = {"semantic": False, "zero_shot": False, "auto_tags": False}


def core_settings(data: Path) -> object:
    return load_settings(data_dir=data, env={}, overrides=CORE_ONLY)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    data = tmp_path_factory.mktemp("data")
    col = Collection(core_settings(data))
    report = ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
    assert len(report.added) == 12 and not report.failed
    yield col
    col.close()


def first_file(col: Collection, req: SearchRequest) -> str:
    hits = search(col, req).hits
    assert hits, f"no results for {req}"
    return Path(hits[0].record.path).name


def test_text_query_finds_the_annotated_photo(demo: Collection) -> None:
    assert first_file(demo, SearchRequest(text="cat")) == "cat.png"
    assert first_file(demo, SearchRequest(text="coffee cups")) == "coffee.png"  # stemmed
    assert first_file(demo, SearchRequest(text='"launch pad"')) == "rocket.jpg"


def test_image_query_finds_the_photo_from_a_cropped_copy(demo: Collection) -> None:
    for name in ("cat.png", "rocket.jpg", "coffee.png"):
        req = SearchRequest(image_bytes=crop_bytes(PHOTOS_DIR / name))
        response = search(demo, req)
        assert Path(response.hits[0].record.path).name == name
        assert response.hits[0].signals["image"] > 0.8
        assert response.hits[0].signals["text"] is None


def test_combined_query_uses_both_sides(demo: Collection) -> None:
    # "texture" annotates brick wall, grass and gravel alike; the image picks gravel.
    text_only = search(demo, SearchRequest(text="texture")).hits
    assert {Path(h.record.path).name for h in text_only if h.signals["text"] is not None} == {
        "brick_wall.png", "grass.png", "gravel.png"}
    req = SearchRequest(text="texture", image_bytes=crop_bytes(PHOTOS_DIR / "gravel.png"))
    hits = search(demo, req).hits
    assert Path(hits[0].record.path).name == "gravel.png"
    assert hits[0].signals["text"] is not None and hits[0].signals["image"] is not None
    # The fused score is the weighted mean of the normalised scores.
    n = hits[0].normalized
    assert hits[0].score == pytest.approx(0.5 * n["text"] + 0.5 * n["image"])
    # RRF sees only ranks: grass is 1st by words (a shorter text) and 2nd by looks, gravel
    # 2nd or 3rd by words (tied with brick) and 1st by looks.
    rrf = search(demo, SearchRequest(text="texture", fusion="rrf",
                                     image_bytes=crop_bytes(PHOTOS_DIR / "gravel.png"))).hits
    assert Path(rrf[0].record.path).name == "grass.png"
    assert rrf[0].score == pytest.approx((1 / 61 + 1 / 62) / 2)
    assert Path(rrf[1].record.path).name == "gravel.png"


def test_alpha_moves_the_ranking(demo: Collection) -> None:
    image = crop_bytes(PHOTOS_DIR / "cat.png")
    text_heavy = search(demo, SearchRequest(text="rocket", image_bytes=image, alpha=0.05))
    image_heavy = search(demo, SearchRequest(text="rocket", image_bytes=image, alpha=0.95))
    assert Path(text_heavy.hits[0].record.path).name == "rocket.jpg"
    assert Path(image_heavy.hits[0].record.path).name == "cat.png"


def test_more_like_this_excludes_the_query_image(demo: Collection) -> None:
    cat = next(r for r in demo.store.iter_records() if r.path.endswith("cat.png"))
    hits = search(demo, SearchRequest(image_id=cat.id, limit=20)).hits
    assert cat.id not in [h.record.id for h in hits]
    assert len(hits) == 11


def test_pagination_is_consistent(demo: Collection) -> None:
    image = crop_bytes(PHOTOS_DIR / "coins.png")
    full = [h.record.id for h in search(demo, SearchRequest(image_bytes=image, limit=12)).hits]
    pages = []
    for offset in range(0, 12, 5):
        resp = search(demo, SearchRequest(image_bytes=image, limit=5, offset=offset))
        pages += [h.record.id for h in resp.hits]
        assert resp.total == 12
    assert pages == full
    assert [h.rank for h in search(demo, SearchRequest(image_bytes=image, limit=2,
                                                       offset=4)).hits] == [5, 6]


def test_unannotated_photo_is_not_buried(tmp_path: Path, demo: Collection) -> None:
    col = Collection(core_settings(tmp_path / "d"))
    try:
        ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        # A second, unannotated shot of the cat: a crop saved as a new file.
        extra = tmp_path / "new_cat.jpg"
        extra.write_bytes(crop_bytes(PHOTOS_DIR / "cat.png", frac=0.15, scale=0.8))
        report = ingest(col, [extra])
        (new_id,) = [i for _, i in report.added]
        req = SearchRequest(text="cat", image_bytes=crop_bytes(PHOTOS_DIR / "cat.png", 0.05))
        hits = search(col, req).hits
        top2 = [h.record.id for h in hits[:2]]
        assert new_id in top2
        new_hit = next(h for h in hits if h.record.id == new_id)
        annotated_losers = [h for h in hits if h.record.annotated and h.signals["text"] is None]
        assert all(new_hit.score > h.score for h in annotated_losers)
        assert new_hit.normalized["text"] is None  # not applicable, not zero
        # The words side counts as the neutral prior (setting unannotated_prior, 0.5).
        assert new_hit.score == pytest.approx(0.5 * 0.5 + 0.5 * new_hit.normalized["image"])
    finally:
        col.close()


def test_ingest_is_idempotent_and_reindex_gives_same_results(tmp_path: Path) -> None:
    col = Collection(core_settings(tmp_path / "d"))
    try:
        first = ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        again = ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        assert len(first.added) == 12
        assert again.added == [] and len(again.duplicates) == 12
        assert {i for _, i in again.duplicates} == {i for _, i in first.added}
        assert col.store.count() == 12 and col.text.doc_count() == 12
        queries = ["cat", "texture", "space OR rocket", "-texture", "title:coins", "museum"]
        before = {q: search(col, SearchRequest(text=q, limit=20)) for q in queries}
        assert col.reindex() == 12
        for q in queries:
            after = search(col, SearchRequest(text=q, limit=20))
            assert [(h.record.id, h.score) for h in after.hits] == [
                (h.record.id, h.score) for h in before[q].hits]
        # A fresh process (new Collection) over the same directory sees the same.
        col2 = Collection(core_settings(tmp_path / "d"))
        assert [h.record.id for h in search(col2, SearchRequest(text="cat")).hits] == [
            h.record.id for h in before["cat"].hits]
        col2.close()
    finally:
        col.close()


def test_broken_files_fail_alone(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(PHOTOS_DIR / "cat.png", folder / "cat.png")
    shutil.copy(PHOTOS_DIR / "rocket.jpg", folder / "rocket.jpg")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "notes.jpg").write_text("this is not a picture\n")
    good = (PHOTOS_DIR / "coffee.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 3])
    (folder / "readme.md").write_text("ignored: not an image extension")
    col = Collection(core_settings(tmp_path / "d"))
    try:
        report = ingest(col, [folder, tmp_path / "missing.jpg"])
        reasons = dict(report.failed)
        assert len(report.added) == 2
        assert "0 bytes" in reasons[str(folder / "empty.jpg")]
        assert "text" in reasons[str(folder / "notes.jpg")]
        assert "truncated" in reasons[str(folder / "truncated.png")].lower() or "corrupt" in \
            reasons[str(folder / "truncated.png")].lower()
        assert "no such file" in reasons[str(tmp_path / "missing.jpg")]
        assert col.store.count() == 2 and len(col.vectors) == 2 and col.text.doc_count() == 2
    finally:
        col.close()


def test_copies_in_one_run_share_the_first_copys_fate(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that arrives while the first is still being decoded is a duplicate only if the
    first is stored; if the bytes are refused, so is every copy, with the same reason."""
    import threading
    import time

    import hybrid_search.ingest as ingest_module

    real, started = ingest_module.prepare_bytes, threading.Event()

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not started.is_set():  # the first file decodes slowly: the copies catch up
            started.set()
            time.sleep(0.3)
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_module, "prepare_bytes", slow)
    folder = tmp_path / "photos"
    folder.mkdir()
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"></svg>'
    for name in ("a.png", "b.png", "c.png"):
        (folder / name).write_bytes(svg)
    col = Collection(core_settings(tmp_path / "d"))
    try:
        report = ingest(col, [folder], workers=3)
        assert report.added == [] and report.duplicates == []
        assert sorted(p for p, _ in report.failed) == [str(folder / n) for n in
                                                        ("a.png", "b.png", "c.png")]
        assert len({reason for _, reason in report.failed}) == 1
        # Good bytes: one stored, the copies are its duplicates.
        started.clear()
        cat = (PHOTOS_DIR / "cat.png").read_bytes()
        for name in ("a.png", "b.png", "c.png"):
            (folder / name).write_bytes(cat)
        report = ingest(col, [folder], workers=3)
        ((first, stored),) = report.added  # whichever copy a thread claimed first
        names = {str(folder / n) for n in ("a.png", "b.png", "c.png")}
        assert sorted(report.duplicates) == [(p, stored) for p in sorted(names - {first})]
        assert report.failed == []
        # A copy whose own annotations are broken is refused; another copy is stored.
        started.clear()
        col.remove([stored])
        (folder / "a.png.json").write_text("{not json")
        report = ingest(col, [folder], workers=3)
        ((second, stored),) = report.added
        assert second != str(folder / "a.png") and col.store.count() == 1
        # a.png either failed on its sidecar (it was claimed first) or is a duplicate.
        outcome = dict(report.failed) | dict(report.duplicates)
        assert set(outcome) == names - {second}
        assert outcome[str(folder / "a.png")] in (stored, *(r for _, r in report.failed))
        assert all(i == stored for _, i in report.duplicates)
    finally:
        col.close()


def test_annotate_and_remove_reach_both_indexes(tmp_path: Path) -> None:
    col = Collection(core_settings(tmp_path / "d"))
    try:
        ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        cat = next(r for r in col.store.iter_records() if r.path.endswith("cat.png"))
        assert search(col, SearchRequest(text="chelsea")).hits[0].record.id == cat.id
        col.annotate(cat.id, add_tags=["kitten"], title="Sleepy kitten")
        assert search(col, SearchRequest(text="kitten")).hits[0].record.id == cat.id
        col.remove([cat.id])
        # "kitten" is no longer in the vocabulary; autocorrect may try a near word instead.
        after = search(col, SearchRequest(text="kitten"))
        assert cat.id not in [h.record.id for h in after.hits]
        assert after.hits == [] or after.corrected_query not in (None, "kitten")
        image_hits = search(col, SearchRequest(image_bytes=crop_bytes(PHOTOS_DIR / "cat.png")))
        assert cat.id not in [h.record.id for h in image_hits.hits]
        assert col.store.count() == 11 and len(col.vectors) == 11
    finally:
        col.close()


def test_cli_search_json_stats_and_evaluate(tmp_path: Path) -> None:
    runner = CliRunner(env={"HYBRID_SEARCH_SEMANTIC": "false", "HYBRID_SEARCH_ZERO_SHOT": "false",
                            "HYBRID_SEARCH_AUTO_TAGS": "false"})
    data = str(tmp_path / "d")
    result = runner.invoke(main, ["--data-dir", data, "ingest", str(PHOTOS_DIR),
                                  "--annotations", str(ANNOTATIONS_CSV), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 12
    result = runner.invoke(main, ["--data-dir", data, "search", "--text", "cat", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert Path(rows[0]["path"]).name == "cat.png"
    assert {"id", "path", "title", "tags", "score", "signals"} <= set(rows[0])
    assert rows[0]["signals"]["text"] > 0
    assert rows[0]["signals"]["image"] is None  # no query image: the signal took no part
    query = tmp_path / "q.jpg"
    query.write_bytes(crop_bytes(PHOTOS_DIR / "rocket.jpg"))
    result = runner.invoke(main, ["--data-dir", data, "search", "--image", str(query),
                                  "--text", "launch", "--alpha", "0.7", "--fusion", "rrf",
                                  "--limit", "3", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert len(rows) == 3 and Path(rows[0]["path"]).name == "rocket.jpg"
    result = runner.invoke(main, ["--data-dir", data, "stats", "--json"])
    assert json.loads(result.stdout)["images"] == 12
    # Errors are one clear line and exit status 1, never a traceback.
    result = runner.invoke(main, ["--data-dir", data, "search", "--text", "cat",
                                  "--alpha", "3"])
    assert result.exit_code == 1 and "alpha" in result.output
    result = runner.invoke(main, ["--data-dir", data, "search", "--image", str(tmp_path)])
    assert result.exit_code != 0
    result = runner.invoke(main, ["--data-dir", data, "search"])
    assert result.exit_code == 1 and "words" in result.output
    # evaluate: two labels, each a photo and two near-copies of it.
    root = tmp_path / "gt"
    root.mkdir()
    lines = ["file,label"]
    for label in ("cat", "rocket"):
        src = PHOTOS_DIR / ("cat.png" if label == "cat" else "rocket.jpg")
        for n, frac in enumerate((0.0, 0.1, 0.2)):
            (root / f"{label}{n}.jpg").write_bytes(crop_bytes(src, frac, 0.5 + 0.1 * n))
            lines.append(f"{label}{n}.jpg,{label}")
    (root / "gt.csv").write_text("\n".join(lines) + "\n")
    result = runner.invoke(main, ["--data-dir", str(tmp_path / "e"), "evaluate", "images",
                                  "--ground-truth", str(root / "gt.csv")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_queries"] == 6 and metrics["model"] == "efficientnet-lite0"
    assert metrics["mAP"] == pytest.approx(1.0) and metrics["metric"] == "cosine"
    assert metrics["P@10"] == pytest.approx(2 / 10)


def test_stored_vectors_are_unit_float32(demo: Collection) -> None:
    ids, matrix, norms = demo.store.load_vectors("efficientnet-lite0")
    assert matrix.dtype == np.float32 and matrix.shape == (12, 1280)
    assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
    assert (norms > 1.0).all()


def test_two_processes_sharing_a_data_dir_see_each_others_writes(tmp_path: Path) -> None:
    # Two Collections over one directory stand for two server worker processes: each has
    # its own in-memory matrices, kept current from the database's change log.
    writer = Collection(core_settings(tmp_path / "d"))
    reader = Collection(core_settings(tmp_path / "d"))
    try:
        ingest(writer, [PHOTOS_DIR / "cat.png", PHOTOS_DIR / "rocket.jpg"])
        assert len(search(reader, SearchRequest(image_bytes=crop_bytes(
            PHOTOS_DIR / "cat.png"))).hits) == 2  # reader loaded its matrix here
        report = ingest(writer, [PHOTOS_DIR / "coffee.png"], annotations=None)
        (coffee,) = [i for _, i in report.added]
        hits = search(reader, SearchRequest(image_bytes=crop_bytes(PHOTOS_DIR / "coffee.png")))
        assert hits.hits[0].record.id == coffee
        writer.annotate(coffee, title="Espresso")
        hit = search(reader, SearchRequest(text="espresso")).hits[0]
        assert hit.record.id == coffee and hit.normalized["text"] == 1.0
        writer.remove([coffee])
        hits = search(reader, SearchRequest(image_bytes=crop_bytes(PHOTOS_DIR / "coffee.png")))
        assert coffee not in [h.record.id for h in hits.hits] and len(hits.hits) == 2
    finally:
        writer.close()
        reader.close()


def test_searches_do_not_wait_for_a_write_in_progress(demo: Collection) -> None:
    import threading

    # A writer holds the process's write lock (as a long ingest batch or a Whoosh commit
    # would); a search from another thread must still finish.
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        with demo._write_lock:
            holding.set()
            release.wait(30)

    t = threading.Thread(target=writer)
    t.start()
    try:
        assert holding.wait(10)
        result: list[object] = []
        query = SearchRequest(text="cat", image_bytes=crop_bytes(PHOTOS_DIR / "cat.png"))
        reader = threading.Thread(target=lambda: result.append(search(demo, query)))
        reader.start()
        reader.join(20)
        assert not reader.is_alive() and result, "search blocked behind the writer"
        assert result[0].hits[0].record.filename == "cat.png"  # type: ignore[attr-defined]
    finally:
        release.set()
        t.join()
