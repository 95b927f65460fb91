"""Tests for the CLIP embedder: plumbing only, with a tiny randomly initialised model.

Nothing here downloads: the Hugging Face cache is an empty temporary directory, and the one test
of `download` replaces the network call. Nothing here says anything about CLIP's quality.
"""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hybrid_search.clip import (
    RANDOM,
    TEST_MODEL,
    ClipEmbedder,
    available_models,
    cached_weights,
    download,
    register_test_model,
)
from hybrid_search.embedding import get_image_embedder
from hybrid_search.exceptions import ConfigError, ModelUnavailableError

DIM = 32  # embed_dim of the tiny test model
SIZE = 32  # its input size
LAION = ("ViT-B-32", "laion2b_s34b_b79k")
LAION_REPO = "models--laion--CLIP-ViT-B-32-laion2B-s34B-b79K"


@pytest.fixture(scope="module")
def tiny() -> ClipEmbedder:
    """The tiny random CLIP, loaded once for the module."""
    embedder = ClipEmbedder(TEST_MODEL, RANDOM)
    embedder.load()
    return embedder


@pytest.fixture
def images() -> list[Image.Image]:
    """Images of assorted sizes and modes."""
    rng = np.random.default_rng(0)
    noise = Image.fromarray(rng.integers(0, 256, (48, 80, 3), dtype=np.uint8))
    return [
        noise,
        Image.new("RGB", (300, 20), (200, 30, 30)),
        Image.new("L", (20, 90), 128),
        Image.new("RGBA", (64, 64), (0, 0, 255, 0)),
        noise.convert("P"),
        Image.new("1", (1, 1), 1),
        Image.new("CMYK", (40, 40), (0, 100, 100, 0)),
    ]


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache, used by huggingface_hub, open_clip and transformers."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def fake_cached_file(cache: Path, repo: str, filename: str) -> Path:
    """Put a file where huggingface_hub's cache keeps the main revision of `repo`."""
    commit = "0" * 40
    (cache / repo / "refs").mkdir(parents=True)
    (cache / repo / "refs" / "main").write_text(commit)
    path = cache / repo / "snapshots" / commit / filename
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not really weights")
    return path


def assert_unit_rows(x: np.ndarray, n: int) -> None:
    assert x.shape == (n, DIM)
    assert x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)


# -- vectors ---------------------------------------------------------------------------------

def test_tiny_model_has_config_dim_without_loading() -> None:
    embedder = ClipEmbedder(TEST_MODEL, RANDOM)
    assert embedder.dim == DIM and embedder.model_id == f"clip:{TEST_MODEL}:random"
    assert embedder._model is None  # constructing loads nothing


def test_image_vectors_are_unit_float32_rows(
    tiny: ClipEmbedder, images: list[Image.Image]
) -> None:
    vectors = tiny.encode_images(images)
    assert_unit_rows(vectors, len(images))
    assert np.isfinite(vectors).all()


def test_text_vectors_are_unit_float32_rows(tiny: ClipEmbedder) -> None:
    texts = ["a red square", "", "word " * 500]  # empty and over-long texts too
    assert_unit_rows(tiny.encode_texts(texts), len(texts))


def test_empty_batches(tiny: ClipEmbedder) -> None:
    assert tiny.encode_images([]).shape == (0, DIM)
    assert tiny.encode_texts([]).shape == (0, DIM)
    vectors, norms = tiny.encode_arrays_with_norms(np.zeros((0, 3, SIZE, SIZE), np.float32))
    assert vectors.shape == (0, DIM) and norms.shape == (0,)


def test_preprocess_is_open_clips_eval_transform(
    tiny: ClipEmbedder, images: list[Image.Image]
) -> None:
    from open_clip.transform import PreprocessCfg, image_transform_v2

    reference = image_transform_v2(PreprocessCfg(**tiny.load().visual.preprocess_cfg), False)
    for image in images:
        arr = tiny.preprocess(image)
        assert arr.shape == (3, SIZE, SIZE) and arr.dtype == np.float32
        assert arr.flags.c_contiguous
        expected = reference(image.convert("RGB")).numpy()
        np.testing.assert_allclose(arr, expected, atol=1e-5)


def test_norms_are_lengths_of_the_raw_image_features(
    tiny: ClipEmbedder, images: list[Image.Image]
) -> None:
    batch = np.stack([tiny.preprocess(im) for im in images])
    vectors, norms = tiny.encode_arrays_with_norms(batch)
    with torch.inference_mode():
        raw = tiny.load().encode_image(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(vectors * norms[:, None], raw, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(tiny.encode_arrays(batch), vectors)
    np.testing.assert_allclose(tiny.encode_images(images), vectors, atol=1e-6)


def test_text_vector_scores_image_vectors(
    tiny: ClipEmbedder, images: list[Image.Image]
) -> None:
    # The path a CLIP text query takes: one text vector against the image matrix.
    matrix = tiny.encode_images(images)
    query = tiny.encode_texts(["a photo of a red square"])[0]
    scores = matrix @ query
    assert scores.shape == (len(images),) and scores.dtype == np.float32
    assert (np.abs(scores) <= 1.0 + 1e-5).all()


def test_encoding_from_threads_loads_once_and_agrees(images: list[Image.Image]) -> None:
    embedder = ClipEmbedder(TEST_MODEL, RANDOM)
    results: list[np.ndarray] = []
    models: list[object] = []

    def work() -> None:
        models.append(embedder.load())
        results.append(embedder.encode_images(images))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and all(m is models[0] for m in models)
    for r in results[1:]:
        np.testing.assert_allclose(r, results[0], atol=1e-6)


# -- weights and model ids -------------------------------------------------------------------

def test_random_weights_are_the_same_in_every_instance(
    tiny: ClipEmbedder, images: list[Image.Image]
) -> None:
    before = torch.random.get_rng_state()
    other = ClipEmbedder(TEST_MODEL, RANDOM)
    assert other.model_id == tiny.model_id
    np.testing.assert_array_equal(other.encode_images(images), tiny.encode_images(images))
    np.testing.assert_array_equal(other.encode_texts(["cat"]), tiny.encode_texts(["cat"]))
    assert torch.equal(torch.random.get_rng_state(), before)  # global RNG left alone


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_local_checkpoint_loads_its_weights(
    tmp_path: Path, images: list[Image.Image], suffix: str
) -> None:
    source = ClipEmbedder(TEST_MODEL, RANDOM)
    model = source.load()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # weights no seed reproduces
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)

    loaded = ClipEmbedder(TEST_MODEL, str(path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.model_id == f"clip:{TEST_MODEL}:file-{digest[:12]}"
    assert loaded.weights == path
    texts = ["a cat", "a dog on a beach"]
    np.testing.assert_array_equal(loaded.encode_images(images), source.encode_images(images))
    np.testing.assert_array_equal(loaded.encode_texts(texts), source.encode_texts(texts))
    fresh = ClipEmbedder(TEST_MODEL, RANDOM)
    assert not np.allclose(loaded.encode_images(images), fresh.encode_images(images))


def test_model_id_names_the_weights(tmp_path: Path) -> None:
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    a.write_bytes(b"weights a")
    b.write_bytes(b"weights b")
    ids = {
        ClipEmbedder(TEST_MODEL, RANDOM).model_id,
        ClipEmbedder(TEST_MODEL, str(a)).model_id,
        ClipEmbedder(TEST_MODEL, str(b)).model_id,
    }
    assert len(ids) == 3
    assert ClipEmbedder(TEST_MODEL, str(a)).model_id == ClipEmbedder(TEST_MODEL, str(a)).model_id
    copy = tmp_path / "sub" / "copy.pt"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    assert ClipEmbedder(TEST_MODEL, str(copy)).model_id == ClipEmbedder(TEST_MODEL, str(a)).model_id


def test_checkpoint_of_another_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, path)
    embedder = ClipEmbedder(TEST_MODEL, str(path))
    with pytest.raises(ModelUnavailableError, match="clip_pretrained: cannot load"):
        embedder.encode_images([Image.new("RGB", (8, 8))])


def test_missing_checkpoint_file_names_setting_and_command(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError) as exc:
        ClipEmbedder("ViT-B-32", str(tmp_path / "missing.pt"))
    message = str(exc.value)
    assert "clip_pretrained" in message and "missing.pt" in message
    assert "hybrid-search models download ViT-B-32 --pretrained" in message


def test_tag_not_in_cache_names_setting_and_command(hf_cache: Path) -> None:
    assert cached_weights(*LAION) is None
    for tag in ("laion2b_s34b_b79k", "LAION2B-s34b-b79k"):
        with pytest.raises(ModelUnavailableError) as exc:
            ClipEmbedder("ViT-B-32", tag)
        message = str(exc.value)
        assert "clip_pretrained" in message
        assert "`hybrid-search models download ViT-B-32 --pretrained laion2b_s34b_b79k`" in message


def test_tag_in_cache_is_found_without_loading(hf_cache: Path) -> None:
    path = fake_cached_file(hf_cache, LAION_REPO, "open_clip_model.safetensors")
    assert cached_weights(*LAION) == path
    embedder = ClipEmbedder("ViT-B/32", "LAION2B-s34b-b79k")
    assert embedder.model_id == "clip:ViT-B-32:laion2b_s34b_b79k"
    assert embedder.weights == path and embedder.dim == 512
    assert embedder.preprocess(Image.new("RGB", (300, 200))).shape == (3, 224, 224)


def test_unknown_model_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"model: unknown CLIP model 'ViT-B-33'.*ViT-B-32"):
        ClipEmbedder("ViT-B-33", "openai")
    with pytest.raises(ConfigError, match="not supported"):
        ClipEmbedder("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K", "")
    with pytest.raises(ConfigError, match="Hugging Face model xlm-roberta-base"):
        ClipEmbedder("xlm-roberta-base-ViT-B-32", "laion5b_s13b_b90k")


def test_bad_pretrained_values_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="clip_pretrained is empty.*models download ViT-B-32"):
        ClipEmbedder("ViT-B-32", "")
    with pytest.raises(ConfigError, match="'webli' is neither a pretrained tag.*laion2b_s34b_b79k"):
        ClipEmbedder("ViT-B-32", "webli")


def test_missing_hf_tokenizer_is_a_clear_error(hf_cache: Path) -> None:
    embedder = ClipEmbedder("ViT-B-16-SigLIP2", RANDOM)
    with pytest.raises(ModelUnavailableError, match="tokenizer of CLIP model ViT-B-16-SigLIP2"):
        embedder.encode_texts(["a cat"])
    assert embedder._model is None  # found out before loading the model


# -- download, listing, registry -------------------------------------------------------------

def test_download_without_network_is_a_clear_error(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip.pretrained

    calls: list[str] = []

    def offline(repo_id: str, filename: str, **kwargs: object) -> str:
        calls.append(filename)
        raise ConnectionError("no network")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", offline)
    with pytest.raises(ModelUnavailableError, match="could not download CLIP weights ViT-B-32"):
        download(*LAION, progress=False)
    assert calls == ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]


def test_download_of_cached_weights_uses_no_network(
    hf_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import open_clip.pretrained

    def fail(*args: object, **kwargs: object) -> str:
        raise AssertionError("network used")

    monkeypatch.setattr(open_clip.pretrained, "hf_hub_download", fail)
    path = fake_cached_file(hf_cache, LAION_REPO, "open_clip_pytorch_model.bin")
    assert download(*LAION, progress=False) == path
    with pytest.raises(ConfigError, match="not a pretrained tag"):
        download("ViT-B-32", "webli", progress=False)


def test_available_models_lists_runnable_models_and_tags() -> None:
    register_test_model()
    models = dict(available_models())
    assert "laion2b_s34b_b79k" in models["ViT-B-32"]
    assert "webli" in models["ViT-B-16-SigLIP2"]
    assert TEST_MODEL not in models
    assert "xlm-roberta-base-ViT-B-32" not in models


def test_get_image_embedder_builds_a_shared_clip_embedder(images: list[Image.Image]) -> None:
    embedder = get_image_embedder(f"clip:{TEST_MODEL}", pretrained=RANDOM)
    assert isinstance(embedder, ClipEmbedder)
    assert embedder is get_image_embedder(f"clip:{TEST_MODEL}", pretrained=RANDOM)
    assert embedder.model_id == f"clip:{TEST_MODEL}:random" and embedder.dim == DIM
    assert_unit_rows(embedder.encode_images(images[:2]), 2)
