"""Words that find what no one wrote down: zero-shot, meaning, auto-tags, spelling, CLIP.

End-to-end through the real Collection, the real Whoosh index, the bundled CNN and MiniLM.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from hybrid_search.cli import main
from hybrid_search.collection import SEMANTIC_MODEL, Collection
from hybrid_search.demo import ANNOTATIONS_CSV, PHOTOS_DIR
from hybrid_search.ingest import embed_missing, ingest
from hybrid_search.search import SearchRequest, search
from hybrid_search.settings import load_settings

pytestmark = pytest.mark.model


def top(col: Collection, text: str, **kw: object) -> str:
    hits = search(col, SearchRequest(text=text, **kw)).hits  # type: ignore[arg-type]
    return hits[0].record.filename


@pytest.fixture(scope="module")
def unannotated(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    col = Collection(load_settings(data_dir=tmp_path_factory.mktemp("bare"), env={}))
    ingest(col, [PHOTOS_DIR])  # no annotations at all
    yield col
    col.close()


@pytest.fixture(scope="module")
def annotated(tmp_path_factory: pytest.TempPathFactory) -> Collection:
    col = Collection(load_settings(data_dir=tmp_path_factory.mktemp("ann"), env={}))
    ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
    yield col
    col.close()


@pytest.mark.parametrize(
    ("words", "expected"),
    [("a cat", "cat.png"), ("spaceship", "rocket.jpg"), ("beverage", "coffee.png"),
     ("stars", "hubble_deep_field.jpg")],
)
def test_words_find_photos_nobody_annotated(unannotated: Collection, words: str,
                                            expected: str) -> None:
    response = search(unannotated, SearchRequest(text=words))
    assert response.hits[0].record.filename == expected
    hit = response.hits[0]
    assert hit.signals["visual"] is not None
    assert hit.normalized["text"] is None and hit.normalized["semantic"] is None


def test_a_word_in_no_annotation_still_finds_the_photo(annotated: Collection) -> None:
    written = ANNOTATIONS_CSV.read_text().lower()
    for words, expected in (("feline", "cat.png"), ("beverage", "coffee.png"),
                            ("planets", "hubble_deep_field.jpg")):
        assert words[:-1] not in written  # not even a stem of it was written down
        hit = search(annotated, SearchRequest(text=words)).hits[0]
        assert hit.record.filename == expected
        assert hit.signals["text"] is None  # found by meaning and looks, not by keywords


def test_meaning_signal_follows_annotation_edits(tmp_path: Path) -> None:
    col = Collection(load_settings(data_dir=tmp_path, env={},
                                   overrides={"zero_shot": False, "auto_tags": False}))
    try:
        ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        cat = next(r for r in col.store.iter_records() if r.filename == "cat.png")
        assert col.store.vector(cat.id, SEMANTIC_MODEL) is not None
        assert top(col, "kitty") == "cat.png"  # meaning, not the word
        col.annotate(cat.id, title="", description="", tags=[])
        assert col.store.vector(cat.id, SEMANTIC_MODEL) is None
        assert cat.id not in [h.record.id for h in search(col, SearchRequest(text="kitty")).hits]
        col.annotate(cat.id, title="A sleepy kitten on a sofa")
        assert top(col, "young cat resting") == "cat.png"
    finally:
        col.close()


def test_auto_tags_are_stored_apart_indexed_and_reviewable(annotated: Collection) -> None:
    cat = next(r for r in annotated.store.iter_records() if r.filename == "cat.png")
    assert cat.auto_tags, "the CNN is confident the cat photo shows a cat breed"
    tag, confidence = cat.auto_tags[0]
    assert confidence >= annotated.settings.auto_tag_threshold
    assert tag not in cat.tags  # shown apart from the manual tags
    hits = search(annotated, SearchRequest(text=f'auto:"{tag}"')).hits
    assert hits[0].record.id == cat.id and hits[0].signals["text"] is not None
    record = annotated.review_auto_tag(cat.id, tag, confirm=True)
    assert tag in record.tags and tag not in [t for t, _ in record.auto_tags]
    hits = search(annotated, SearchRequest(text=f'tags:"{tag}"')).hits
    assert hits[0].record.id == cat.id
    rocket = next(r for r in annotated.store.iter_records() if r.filename == "rocket.jpg")
    if rocket.auto_tags:
        bad, _ = rocket.auto_tags[0]
        record = annotated.review_auto_tag(rocket.id, bad, confirm=False)
        assert bad not in record.tags and not any(t == bad for t, _ in record.auto_tags)


def test_auto_tag_threshold_setting(tmp_path: Path) -> None:
    col = Collection(load_settings(data_dir=tmp_path, env={}, overrides={
        "auto_tag_threshold": 0.99, "semantic": False, "zero_shot": False}))
    try:
        ingest(col, [PHOTOS_DIR])
        assert all(not r.auto_tags for r in col.store.iter_records())
    finally:
        col.close()


def test_spelling_variants_synonyms_and_correction(annotated: Collection) -> None:
    # US/UK folding: the annotations say "grey"; "gray" and "colour/color" both work.
    gray = search(annotated, SearchRequest(text="gray coins")).hits[0]
    assert gray.record.filename == "coins.png" and gray.signals["text"] is not None
    response = search(annotated, SearchRequest(text="cofee"))
    assert response.corrected_query == "coffee"
    assert response.hits[0].record.filename == "coffee.png"
    assert response.hits[0].signals["text"] is not None
    # A query whose words do match gets no correction.
    assert search(annotated, SearchRequest(text="coffee")).corrected_query is None


def test_switching_to_clip_reembeds_and_never_mixes_models(tmp_path: Path) -> None:
    base = load_settings(data_dir=tmp_path, env={},
                         overrides={"semantic": False, "auto_tags": False})
    col = Collection(base)
    try:
        ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        cnn_count = len(col.vectors)
    finally:
        col.close()
    clip = Collection(base.replace(model="clip:hs-tiny-test", clip_pretrained="random"))
    try:
        assert clip.model_id == "clip:hs-tiny-test:random"
        assert len(clip.vectors) == 0  # CNN vectors are never searched with CLIP
        done, failed = embed_missing(clip)
        assert (done, failed) == (12, [])
        assert embed_missing(clip) == (0, [])  # resumable: nothing left to do
        ids, matrix, _ = clip.store.load_vectors(clip.model_id)
        assert matrix.shape == (12, clip.embedder.dim)
        assert np.allclose(np.linalg.norm(matrix, axis=1), 1.0, atol=1e-5)
        models = clip.store.models()
        assert models["efficientnet-lite0"] == cnn_count and models[clip.model_id] == 12
        # Words go through CLIP's text tower straight to the CLIP image vectors.
        response = search(clip, SearchRequest(text="a photo of a rocket", limit=12))
        assert response.signals == ["text", "visual"] and len(response.hits) == 12
        assert all(h.signals["visual"] is not None for h in response.hits)
        image = (PHOTOS_DIR / "cat.png").read_bytes()
        response = search(clip, SearchRequest(image_bytes=image))
        assert response.hits[0].record.filename == "cat.png"  # identical bytes, any weights
    finally:
        clip.close()


def test_evaluate_captions_reports_every_mode(tmp_path: Path) -> None:
    rows = ["file,caption"]
    with ANNOTATIONS_CSV.open() as f:
        for rec in csv.DictReader(f):
            photo = str((PHOTOS_DIR.parent / rec["file"]).resolve())
            rows += [f'{photo},"{rec["title"]}"', f'{photo},"{rec["description"]}"',
                     f'{photo},"{rec["tags"].replace(";", " ")}"']
    gt = tmp_path / "captions.csv"
    gt.write_text("\n".join(rows) + "\n")
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path / "d"), "evaluate",
                                       "captions", "--ground-truth", str(gt),
                                       "--annotate-fraction", "0.5", "--seed", "1"])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout)
    assert metrics["n_queries"] == 24 and metrics["annotated"] == 6
    for mode in ("text", "visual", "hybrid"):
        assert set(metrics[mode]) == {"R@1", "R@5", "R@10", "MRR"}
        assert 0.0 <= metrics[mode]["R@1"] <= metrics[mode]["R@5"] <= metrics[mode]["R@10"]
    # The described half is found by its own words; the fused ranking finds more.
    assert metrics["text"]["R@10"] >= 0.45
    assert metrics["hybrid"]["R@10"] > metrics["text"]["R@10"]
    print(metrics)


def test_a_matching_word_beats_photos_that_only_look_right(tmp_path: Path) -> None:
    from PIL import Image

    # Unannotated near-copies of six demo photos next to the annotated originals.
    extra = tmp_path / "extra"
    extra.mkdir()
    for name in ("cat.png", "rocket.jpg", "coffee.png", "astronaut.png",
                 "hubble_deep_field.jpg", "coins.png"):
        with Image.open(PHOTOS_DIR / name) as im:
            im = im.convert("RGB")
            w, h = im.size
            im.crop((w // 10, h // 10, w * 9 // 10, h * 9 // 10)).save(extra / f"copy-{name}.jpg")
    col = Collection(load_settings(data_dir=tmp_path / "d", env={}))
    try:
        ingest(col, [PHOTOS_DIR], annotations=ANNOTATIONS_CSV)
        ingest(col, [extra])
        for words, expected in (("pompeii", "coins.png"), ("hubble", "hubble_deep_field.jpg"),
                                ("espresso", "coffee.png")):
            hits = search(col, SearchRequest(text=words, limit=3)).hits
            assert hits[0].record.filename == expected, (words, hits)
        # ...and the unannotated copy of the espresso photo follows the original.
        hits = search(col, SearchRequest(text="espresso", limit=2)).hits
        assert hits[1].record.filename == "copy-coffee.png.jpg"
        # Leaving the words out of an unannotated photo's mean instead lets looks alone win.
        col.settings.values["unannotated_prior"] = -1.0
        hits = search(col, SearchRequest(text="pompeii", limit=3)).hits
        assert hits[0].record.filename != "coins.png"
    finally:
        col.close()
