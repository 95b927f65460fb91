"""Tests for zero-shot search through ImageNet labels (ConSE) and auto-tags."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hybrid_search.embedding import l2_normalize
from hybrid_search.zeroshot import (
    DEFAULT_CONSE,
    ConSE,
    ConSEParams,
    auto_tags,
    default_conse,
    imagenet_classes,
    imagenet_labels,
    ridge_decoder,
    softmax,
)

DIM = 8
TOY = ConSEParams(top_k=10, temperature=1.0, label_text="name", centre=False)


class FakeEmbedder:
    """A stand-in for MiniLM: a fixed random unit vector per text; counts what it encodes."""

    model_id = "fake"
    dim = DIM

    def __init__(self) -> None:
        self.calls = 0
        self.texts = 0

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        self.calls += 1
        self.texts += len(texts)
        rows = [
            np.random.default_rng(int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "big"))
            .standard_normal(DIM)
            for t in texts
        ]
        return l2_normalize(np.array(rows).reshape(len(texts), DIM))


def random_logits(n: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal((n, 1000)) * 3).astype(np.float32)


def logits_for(probs: dict[int, float]) -> np.ndarray:
    """One row of logits whose softmax gives `probs`, the rest spread evenly."""
    rest = (1.0 - sum(probs.values())) / (1000 - len(probs))
    p = np.full(1000, rest)
    for j, v in probs.items():
        p[j] = v
    return np.log(p)[None].astype(np.float32)


# --- the ImageNet classes ---------------------------------------------------------------------

def test_imagenet_classes_are_torchvisions_in_logit_order() -> None:
    names = imagenet_classes()
    assert len(names) == 1000 and len(set(names)) == 1000
    assert names[281] == "tabby" and names[0] == "tench"


def test_bundled_labels_line_up_with_the_logits() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    wnids = [c.wnid for c in labels]
    # ImageNet-1k classifiers order their outputs by WordNet id.
    assert wnids == sorted(wnids) and len(set(wnids)) == 1000
    assert labels[281].tag == "tabby cat" and "tabby" in labels[281].names
    assert all(c.gloss and c.tag == c.tag.strip().lower() for c in labels)
    assert len({c.tag for c in labels}) == 1000
    # torchvision's name is one of the class's names, save for one it made up.
    tv = imagenet_classes()
    odd = [i for i, c in enumerate(labels) if tv[i].lower() not in {n.lower() for n in c.names}]
    assert odd == [639]  # "maillot tank suit"


# --- softmax and auto-tags --------------------------------------------------------------------

def test_softmax_rows_sum_to_one_and_temperature_flattens() -> None:
    x = random_logits(3)
    p1, p3 = softmax(x), softmax(x, 3.0)
    assert p1.dtype == np.float32 and np.allclose(p1.sum(axis=1), 1.0, atol=1e-5)
    assert (p3.max(axis=1) < p1.max(axis=1)).all()
    assert (p1.argmax(axis=1) == p3.argmax(axis=1)).all()


def test_auto_tags_threshold_order_and_max() -> None:
    row = logits_for({281: 0.6, 285: 0.25, 282: 0.1})
    assert auto_tags(row, 0.2) == [[("tabby cat", pytest.approx(0.6, abs=1e-4)),
                                    ("Egyptian Mau".lower(), pytest.approx(0.25, abs=1e-4))]]
    assert [t for t, _ in auto_tags(row, 0.05)[0]] == ["tabby cat", "egyptian mau", "tiger cat"]
    assert [t for t, _ in auto_tags(row, 0.05, max_tags=2)[0]] == ["tabby cat", "egyptian mau"]
    assert auto_tags(row, 0.61) == [[]]
    assert auto_tags(row, 0.0, max_tags=0) == [[]]
    tags = auto_tags(row, 0.0, max_tags=7)[0]
    assert len(tags) == 7 and all(type(c) is float for _, c in tags)
    assert [c for _, c in tags] == sorted((c for _, c in tags), reverse=True)


def test_auto_tags_per_photo() -> None:
    rows = np.concatenate([logits_for({281: 0.9}), logits_for({207: 0.5}), random_logits(1)])
    tags = auto_tags(rows, 0.4)
    assert [[t for t, _ in r] for r in tags] == [["tabby cat"], ["golden retriever"], []]
    assert auto_tags(np.zeros((0, 1000), np.float32), 0.3) == []


def test_auto_tags_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        auto_tags(np.zeros((2, 10)), 0.3)


# --- ConSE maths on a toy label matrix -------------------------------------------------------

def test_image_vector_is_the_weighted_mean_of_the_top_labels() -> None:
    conse = ConSE(FakeEmbedder(), TOY)
    labels = conse.label_matrix()
    x = random_logits(4)
    got = conse.image_vectors(x)
    assert got.shape == (4, DIM) and got.dtype == np.float32
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    p = softmax(x)
    for i in range(4):
        top = np.argsort(-p[i])[:10]
        want = (p[i, top, None] * labels[top]).sum(axis=0)
        assert np.allclose(got[i], want / np.linalg.norm(want), atol=1e-5)


def test_top_1_is_the_top_labels_embedding() -> None:
    conse = ConSE(FakeEmbedder(), replace(TOY, top_k=1))
    x = random_logits(5, seed=1)
    assert np.allclose(conse.image_vectors(x), conse.label_matrix()[x.argmax(axis=1)], atol=1e-6)


def test_labels_outside_the_top_k_do_not_count() -> None:
    conse = ConSE(FakeEmbedder(), replace(TOY, top_k=3))
    x = random_logits(1, seed=2)
    y = x.copy()
    rest = np.argsort(-x[0])[3:]
    y[0, rest] -= np.random.default_rng(3).uniform(0, 5, len(rest)).astype(np.float32)
    assert np.allclose(conse.image_vectors(x), conse.image_vectors(y), atol=1e-6)


def test_temperature_moves_between_top_label_and_plain_mean() -> None:
    emb = FakeEmbedder()
    x = random_logits(3, seed=4)
    labels = ConSE(emb, TOY).label_matrix()
    cold = ConSE(emb, replace(TOY, top_k=1000, temperature=1e-3)).image_vectors(x)
    assert np.allclose(cold, labels[x.argmax(axis=1)], atol=1e-5)
    hot = ConSE(emb, replace(TOY, top_k=3, temperature=1e6)).image_vectors(x)
    top3 = np.argsort(-x, axis=1)[:, :3]
    assert np.allclose(hot, l2_normalize(labels[top3].mean(axis=1)), atol=1e-4)


def test_centring_removes_the_mean_label() -> None:
    emb = FakeEmbedder()
    raw = ConSE(emb, TOY).label_matrix()
    centred = ConSE(emb, replace(TOY, centre=True)).label_matrix()
    assert np.allclose(centred, l2_normalize(raw - raw.mean(axis=0)), atol=1e-6)
    assert np.allclose(np.linalg.norm(centred, axis=1), 1.0, atol=1e-5)


def test_ridge_decoding_solves_the_least_squares_problem() -> None:
    rng = np.random.default_rng(5)
    labels = l2_normalize(rng.standard_normal((50, DIM)))
    p = softmax(rng.standard_normal((3, 50)))
    ridge = 0.7
    lam = ridge * np.trace(labels.T @ labels) / DIM
    got = p @ ridge_decoder(labels, ridge)
    for i in range(3):
        # argmin ||L x - p||^2 + lam ||x||^2 as an ordinary least-squares problem.
        a = np.vstack([labels, np.sqrt(lam) * np.eye(DIM)])
        b = np.concatenate([p[i], np.zeros(DIM)])
        want = np.linalg.lstsq(a, b, rcond=None)[0]
        assert np.allclose(got[i], want, atol=1e-5)


def test_ridge_counts_a_repeated_label_once() -> None:
    # Ten labels share one direction (think of 118 dog breeds), one label has another.
    a, b = np.eye(DIM)[0], np.eye(DIM)[1]
    labels = np.vstack([np.tile(a, (10, 1)), b[None], l2_normalize(np.eye(DIM)[2:])])
    p = np.zeros((1, len(labels)))
    p[0, :10], p[0, 10] = 0.04, 0.3  # the shared direction: 0.4 in all, the lone label 0.3
    mean = l2_normalize(p @ labels)[0]
    decoded = l2_normalize(p @ ridge_decoder(labels, 0.05))[0]
    assert mean @ a > mean @ b  # the weighted mean lets the ten outvote the one
    assert decoded @ b > decoded @ a  # the least-squares vector gives each direction its due
    # A large ridge tends to the weighted mean.
    assert np.allclose(l2_normalize(p @ ridge_decoder(labels, 1e6))[0], mean, atol=1e-4)


def test_conse_with_ridge_decodes_the_centred_labels() -> None:
    emb = FakeEmbedder()
    centred = replace(TOY, top_k=1000, centre=True)
    labels = ConSE(emb, centred).label_matrix()
    conse = ConSE(emb, replace(centred, ridge=2.0))
    assert np.allclose(conse.label_matrix(), ridge_decoder(labels, 2.0), atol=1e-6)
    x = random_logits(3, seed=6)
    want = l2_normalize(softmax(x) @ ridge_decoder(labels, 2.0))
    assert np.allclose(conse.image_vectors(x), want, atol=1e-5)


def test_labels_with_several_texts_are_averaged() -> None:
    emb = FakeEmbedder()
    conse = ConSE(emb, replace(TOY, label_text="prompt+gloss"))
    tabby = imagenet_labels()[281]
    want = l2_normalize(emb.encode_texts(["a photo of a tabby cat.", tabby.gloss]).sum(axis=0))
    assert np.allclose(conse.label_matrix()[281], want, atol=1e-6)


def test_empty_and_malformed_logits() -> None:
    emb = FakeEmbedder()
    conse = ConSE(emb, TOY)
    out = conse.image_vectors(np.zeros((0, 1000), np.float32))
    assert out.shape == (0, DIM) and emb.calls == 0
    with pytest.raises(ValueError, match="shape"):
        conse.image_vectors(np.zeros(1000, np.float32))


def test_query_vectors_are_the_embedders_sentence_vectors() -> None:
    emb = FakeEmbedder()
    conse = ConSE(emb, TOY)
    q = conse.query_vectors(["a dog on the beach", " two cats "])
    assert q.shape == (2, DIM) and np.allclose(q, emb.encode_texts(["a dog on the beach",
                                                                     "two cats"]))
    assert conse.query_vectors([]).shape == (0, DIM)


def test_model_id_names_method_and_parameters() -> None:
    emb = FakeEmbedder()
    ids = {ConSE(emb, p).model_id for p in
           (TOY, replace(TOY, top_k=5), replace(TOY, temperature=2.0), replace(TOY, centre=True),
            replace(TOY, label_text="prompt"), replace(TOY, ridge=4.0))}
    assert len(ids) == 6
    assert ConSE(emb, TOY).model_id == "conse-v1-fake-name-k10-t1"
    assert ConSE(emb, replace(TOY, centre=True, ridge=4.0)).model_id == (
        "conse-v1-fake-name-k10-t1-centred-ridge4")
    assert ConSE(emb).model_id.startswith("conse-v1-fake-prompt+gloss-")
    assert ConSE(emb).dim == DIM


@pytest.mark.parametrize("bad", [dict(top_k=0), dict(top_k=1001), dict(temperature=0.0),
                                 dict(temperature=float("nan")), dict(label_text="poem"),
                                 dict(ridge=-1.0), dict(ridge=float("inf"))])
def test_bad_parameters(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        ConSEParams(**bad)  # type: ignore[arg-type]


# --- the label-matrix cache ----------------------------------------------------------------

def test_label_matrix_is_cached_on_disk_and_reused(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    first = ConSE(emb, TOY, cache_dir=tmp_path / "cache").label_matrix()
    assert emb.calls == 1 and emb.texts == 1000
    files = list((tmp_path / "cache").glob("*.npy"))
    assert len(files) == 1 and "fake" in files[0].name
    # Another instance, other top_k, temperature and centring: same embeddings, no encoding.
    for params in (TOY, replace(TOY, top_k=3, temperature=2.0, centre=True)):
        again = ConSE(emb, params, cache_dir=tmp_path / "cache")
        again.label_matrix()
    assert emb.calls == 1
    assert np.array_equal(ConSE(emb, TOY, cache_dir=tmp_path / "cache").label_matrix(), first)
    # Other label texts are other embeddings.
    ConSE(emb, replace(TOY, label_text="prompt"), cache_dir=tmp_path / "cache").label_matrix()
    assert emb.calls == 2 and len(list((tmp_path / "cache").glob("*.npy"))) == 2
    assert not list((tmp_path / "cache").glob("*.tmp"))


def test_one_instance_encodes_once(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    conse = ConSE(emb, TOY)
    conse.image_vectors(random_logits(2))
    conse.image_vectors(random_logits(2))
    assert emb.calls == 1 and not list(tmp_path.iterdir())


def test_a_broken_cache_file_is_rebuilt(tmp_path: Path) -> None:
    emb = FakeEmbedder()
    good = ConSE(emb, TOY, cache_dir=tmp_path).label_matrix()
    (path,) = tmp_path.glob("*.npy")
    path.write_bytes(b"not a numpy file")
    assert np.array_equal(ConSE(emb, TOY, cache_dir=tmp_path).label_matrix(), good)
    assert emb.calls == 2
    assert np.array_equal(np.load(path), good)


def test_unwritable_cache_still_works(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    emb = FakeEmbedder()
    out = ConSE(emb, TOY, cache_dir=blocker / "cache").image_vectors(random_logits(1))
    assert out.shape == (1, DIM)


def test_default_conse_is_shared_per_embedder_and_folder(tmp_path: Path) -> None:
    emb, other = FakeEmbedder(), FakeEmbedder()
    a = default_conse(emb, cache_dir=tmp_path)
    assert default_conse(emb, cache_dir=tmp_path) is a
    assert a.params == DEFAULT_CONSE
    assert default_conse(other, cache_dir=tmp_path) is not a
    assert default_conse(emb, cache_dir=tmp_path / "x") is not a


# --- with the real models ------------------------------------------------------------------

DEMO = Path(__file__).resolve().parents[1] / "hybrid_search" / "demo" / "photos"


@pytest.fixture(scope="module")
def demo_logits() -> dict[str, np.ndarray]:
    from hybrid_search.decode import read_image_file
    from hybrid_search.embedding import EfficientNetLite0

    cnn = EfficientNetLite0()
    names = ["cat", "coffee", "rocket", "astronaut"]
    files = {n: next(DEMO.glob(f"{n}.*")) for n in names}
    batch = np.stack([cnn.preprocess(read_image_file(files[n])[1].image) for n in names])
    return dict(zip(names, cnn.features_and_logits(batch)[1], strict=True))


@pytest.mark.model
def test_cnn_logits_follow_the_class_order(demo_logits: dict[str, np.ndarray]) -> None:
    assert 281 <= int(demo_logits["cat"].argmax()) <= 285  # a domestic cat
    top5 = np.argsort(-demo_logits["coffee"])[:5]
    assert {967, 968} & set(top5.tolist())  # espresso, cup
    (tag, confidence), *_ = auto_tags(demo_logits["cat"][None], 0.05)[0]
    assert tag in {"tabby cat", "tiger cat", "persian cat", "siamese cat", "egyptian mau"}
    assert confidence > 0.3


@pytest.mark.model
def test_words_find_the_photo_that_shows_them(
    demo_logits: dict[str, np.ndarray], tmp_path_factory: pytest.TempPathFactory
) -> None:
    from hybrid_search.text_embedding import get_text_embedder

    conse = ConSE(get_text_embedder(), cache_dir=tmp_path_factory.mktemp("conse"))
    names = list(demo_logits)
    images = conse.image_vectors(np.stack([demo_logits[n] for n in names]))
    assert images.shape == (len(names), 384)
    queries = {"cat": "a cat looking at the camera", "coffee": "a cup of coffee on a table",
               "rocket": "a rocket on the launch pad"}
    q = conse.query_vectors(list(queries.values()))
    best = (q @ images.T).argmax(axis=1)
    assert [names[j] for j in best] == list(queries)
