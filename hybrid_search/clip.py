"""CLIP image and text embeddings (open_clip), with weights that only ever come from disk.

Settings `model = "clip:<open_clip model name>"` and `clip_pretrained` pick the model. The
weights are a local checkpoint file, or an open_clip pretrained tag already in the Hugging Face
hub cache; `download` (the `hybrid-search models download` command) is the only code that
touches the network. Searching and ingesting never download anything.

`model_id` names the model and its weights, so vectors of different weights never mix:

    clip:<name>:<tag>               an open_clip tag, lower-cased as open_clip does
    clip:<name>:file-<sha256[:12]>  a local checkpoint, by content (moving or copying it keeps
                                    the id); hashed once per process, about 0.7 s per GB
    clip:<name>:random              seeded random weights, for tests only

Constructing a `ClipEmbedder` is cheap and raises every configuration error at once (unknown
model, unknown tag, weights not on this machine); loading the weights waits for the first
encode.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .embedding import _torch_device, l2_normalize
from .exceptions import ConfigError, ModelUnavailableError

__all__ = [
    "RANDOM",
    "TEST_MODEL",
    "ClipEmbedder",
    "available_models",
    "cached_weights",
    "download",
    "register_test_model",
]

# `clip_pretrained = "random"`: seeded random weights, the same in every process. For tests
# only; a CLIP model without trained weights finds nothing.
RANDOM = "random"

# A tiny CLIP (2-layer ViT and text transformer, 32-d vectors) for tests only; see
# `register_test_model`.
TEST_MODEL = "hs-tiny-test"
_TEST_MODEL_CFG: dict[str, Any] = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 64, "head_width": 32, "layers": 2},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}

_SUGGESTED = ("ViT-B-32", "ViT-B-16", "ViT-L-14", "ViT-B-16-SigLIP2", "MobileCLIP2-S2")
_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz")
_REGISTER_LOCK = threading.Lock()
_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGESTS_LOCK = threading.Lock()


def register_test_model() -> str:
    """Make the tiny test CLIP known to open_clip (idempotent); returns its name. Tests only."""
    import open_clip

    with _REGISTER_LOCK:
        if TEST_MODEL not in open_clip.list_models():
            # open_clip registers configs from files only; it keeps them once read.
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / f"{TEST_MODEL}.json"
                path.write_text(json.dumps(_TEST_MODEL_CFG), encoding="utf-8")
                open_clip.add_model_config(path)
    return TEST_MODEL


def available_models() -> list[tuple[str, list[str]]]:
    """Every CLIP model this install can run, with its pretrained tags (maybe none)."""
    import open_clip

    return [
        (name, list(open_clip.list_pretrained_tags_by_model(name)))
        for name in open_clip.list_models()
        if name != TEST_MODEL and _unsupported_reason(name) is None
    ]


def cached_weights(name: str, tag: str) -> Path | None:
    """The local file of a model's pretrained tag if it is in the cache, else None."""
    cfg = _tag_cfg(name, tag)
    if not cfg:
        return None
    if cfg.get("file"):
        path = Path(cfg["file"]).expanduser()
        return path if path.is_file() else None
    if cfg.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        repo_id, filename = _hf_location(cfg["hf_hub"])
        # The same files, in the same order, as open_clip's download_pretrained_from_hf.
        for candidate in (*_safetensors_alternatives(filename), filename):
            found = try_to_load_from_cache(repo_id, candidate)
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
        return None
    if cfg.get("url"):
        path = Path("~/.cache/clip").expanduser() / os.path.basename(cfg["url"])
        return path if path.is_file() else None
    return None


def download(name: str, pretrained: str, progress: bool = True) -> Path:
    """Fetch a pretrained tag's weights (and tokenizer) into the cache; the only network use."""
    name = _check_model_name(name)
    cfg = _tag_cfg(name, pretrained)
    if not cfg:
        raise ConfigError(
            f"{pretrained!r} is not a pretrained tag of CLIP model {name}; {_tags_hint(name)}"
        )
    import open_clip
    from huggingface_hub.utils import (
        are_progress_bars_disabled,
        disable_progress_bars,
        enable_progress_bars,
    )

    was_disabled = are_progress_bars_disabled()
    if not progress:
        disable_progress_bars()
    try:
        path = cached_weights(name, pretrained)
        if path is None:
            path = Path(open_clip.pretrained.download_pretrained(cfg))
        if _hf_tokenizer(name):
            open_clip.get_tokenizer(name)  # caches the tokenizer files for offline use
    # huggingface_hub, transformers and urllib fail in many types (httpx, OSError, ValueError).
    except Exception as e:
        raise ModelUnavailableError(
            f"could not download CLIP weights {name} ({_clean_tag(pretrained)}): {_first_line(e)}; "
            "check the network connection and run the command again, or fetch a checkpoint "
            "elsewhere and set clip_pretrained to its path"
        ) from e
    finally:
        if not progress and not was_disabled:
            enable_progress_bars()
    return path


class ClipEmbedder:
    """An open_clip model: images and query text as comparable, normalised vectors."""

    def __init__(
        self, name: str, pretrained: str, *, device: str = "cpu", threads: int = 0
    ) -> None:
        self.name = _check_model_name(name)
        self.pretrained = pretrained.strip()
        self.device = device
        self.threads = threads
        config = _model_config(self.name)
        self.dim: int = int(config["embed_dim"])
        self.input_size: int = int(config["vision_cfg"]["image_size"])
        self._tag_cfg: dict[str, Any] = {}
        self.weights: Path | None = None  # None: seeded random weights
        self.model_id: str = self._resolve_weights()
        self._transform = _eval_transform(self._preprocess_cfg())
        self._model: Any = None
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def _resolve_weights(self) -> str:
        """Find the weights `pretrained` names (setting `self.weights`) and return the model id."""
        name, value = self.name, self.pretrained
        if not value:
            raise ConfigError(
                f"setting clip_pretrained is empty, but CLIP model {name} needs trained weights: "
                f"set it to a local checkpoint file, or to a pretrained tag ({_tags_hint(name)}) "
                f"and {_download_hint(name, None)}"
            )
        if value == RANDOM:
            return f"clip:{name}:{RANDOM}"
        cfg = _tag_cfg(name, value)
        if cfg:
            tag = _clean_tag(value)
            self.weights = cached_weights(name, tag)
            if self.weights is None:
                raise ModelUnavailableError(
                    f"setting clip_pretrained: weights {tag} of CLIP model {name} are not on "
                    f"this machine; {_download_hint(name, tag)}, or set clip_pretrained to a "
                    "local checkpoint file"
                )
            self._tag_cfg = cfg
            return f"clip:{name}:{tag}"
        path = Path(value).expanduser()
        if path.is_file():
            self.weights = path
            return f"clip:{name}:file-{_file_digest(path)[:12]}"
        if _looks_like_path(value):
            raise ModelUnavailableError(
                f"setting clip_pretrained: checkpoint file {path} does not exist; set "
                f"clip_pretrained to an existing checkpoint file, or to a pretrained tag and "
                f"{_download_hint(name, None)}"
            )
        raise ConfigError(
            f"setting clip_pretrained: {value!r} is neither a pretrained tag of CLIP model "
            f"{name} nor a file; {_tags_hint(name)}"
        )

    def _preprocess_cfg(self) -> dict[str, Any]:
        """open_clip's inference preprocessing for this model and tag (size, mean, std, ...)."""
        from open_clip.transform import PreprocessCfg, merge_preprocess_dict

        cfg = merge_preprocess_dict(PreprocessCfg(), self._tag_cfg)
        cfg["size"] = self.input_size
        return cfg

    def load(self) -> Any:
        """The open_clip model (a torch module), loaded on first call."""
        with self._lock:
            if self._model is None:
                self._model = self._create()
            return self._model

    def _create(self) -> Any:
        import open_clip
        import torch

        if self.threads:
            torch.set_num_threads(self.threads)
        kwargs: dict[str, Any] = {
            "device": _torch_device(self.device),
            "force_preprocess_cfg": self._preprocess_cfg(),
            "force_quick_gelu": bool(self._tag_cfg.get("quick_gelu", False)),
            # No tower may fetch its own base weights (timm, Hugging Face): never download.
            "pretrained_image": False,
            "pretrained_text": False,
        }
        if self.weights is None:
            # The same random weights in every process, without disturbing the global RNG.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = open_clip.create_model(self.name, **kwargs)
        else:
            try:
                # A file path (never a tag) keeps open_clip away from the network.
                model = open_clip.create_model(self.name, pretrained=str(self.weights), **kwargs)
            # torch.load, safetensors and load_state_dict fail in many types for a bad file.
            except Exception as e:
                raise ModelUnavailableError(
                    f"setting clip_pretrained: cannot load {self.weights} into CLIP model "
                    f"{self.name}: {_first_line(e)}"
                ) from e
        model.eval()
        return model

    def _load_tokenizer(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                import open_clip

                if not _hf_tokenizer(self.name):
                    self._tokenizer = open_clip.get_tokenizer(self.name)
                else:
                    try:
                        self._tokenizer = open_clip.get_tokenizer(
                            self.name, local_files_only=True
                        )
                    except (OSError, ValueError) as e:
                        tag = _clean_tag(self.pretrained) if self._tag_cfg else None
                        raise ModelUnavailableError(
                            f"setting model: the tokenizer of CLIP model {self.name} is not on "
                            f"this machine ({_first_line(e)}); {_download_hint(self.name, tag)}"
                        ) from e
            return self._tokenizer

    def preprocess(self, image: Image.Image) -> np.ndarray:
        """One image as a CHW float32 array, by open_clip's own eval transform; thread-safe."""
        pil_steps, mean, std = self._transform
        img = image.convert("RGB")
        for step in pil_steps:
            img = step(img)
        arr = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        arr = (arr - mean) / std
        return np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Normalised image vectors of a preprocessed batch."""
        return self.encode_arrays_with_norms(batch)[0]

    def encode_arrays_with_norms(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Normalised image vectors and their lengths before normalising."""
        if len(batch) == 0:
            return np.zeros((0, self.dim), dtype=np.float32), np.zeros(0, dtype=np.float32)
        import torch

        model = self.load()
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
            feats = model.encode_image(x.to(_torch_device(self.device)), normalize=False)
        raw = feats.float().cpu().numpy()
        return l2_normalize(raw), np.linalg.norm(raw, axis=1).astype(np.float32)

    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Images (any mode, any size) as an (n, dim) float32 array of L2-normalised rows."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_arrays(np.stack([self.preprocess(im) for im in images]))

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts through CLIP's text tower, as (n, dim) float32 rows comparable with images."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        import torch

        tokenizer = self._load_tokenizer()
        model = self.load()
        with torch.inference_mode():
            tokens = tokenizer(list(texts)).to(_torch_device(self.device))
            feats = model.encode_text(tokens, normalize=False)
        return l2_normalize(feats.float().cpu().numpy())


# -- helpers ---------------------------------------------------------------------------------

def _check_model_name(name: str) -> str:
    """The open_clip name of a `clip:` model setting; ConfigError if open_clip cannot run it."""
    import open_clip

    name = name.strip().replace("/", "-")  # "ViT-B/32" as open_clip itself accepts it
    if name == TEST_MODEL:
        return register_test_model()
    if name.startswith(("hf-hub:", "local-dir:")):
        raise ConfigError(
            "setting model: 'hf-hub:' and 'local-dir:' CLIP names are not supported; use an "
            "open_clip model name (clip:ViT-B-32) and set clip_pretrained to a tag or a file"
        )
    known = [m for m in open_clip.list_models() if m != TEST_MODEL]
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        names = ", ".join(close or [m for m in _SUGGESTED if m in known])
        raise ConfigError(
            f"setting model: unknown CLIP model {name!r}; open_clip has e.g. {names} "
            "(`hybrid-search models list` shows all)"
        )
    reason = _unsupported_reason(name)
    if reason:
        raise ConfigError(f"setting model: CLIP model {name} is not supported: {reason}")
    return name


def _model_config(name: str) -> dict[str, Any]:
    from open_clip import get_model_config

    config = get_model_config(name)
    if not config:
        raise ConfigError(f"setting model: unknown CLIP model {name!r}")
    return dict(config)


def _unsupported_reason(name: str) -> str | None:
    """Why open_clip's model `name` cannot run offline here, or None if it can."""
    from open_clip import get_model_config

    text_cfg = (get_model_config(name) or {}).get("text_cfg", {})
    if text_cfg.get("hf_model_name"):
        # Its text tower is built from a Hugging Face config that open_clip fetches online.
        return f"its text tower is the Hugging Face model {text_cfg['hf_model_name']}"
    return None


def _hf_tokenizer(name: str) -> str:
    """The Hugging Face tokenizer a model uses ('' for open_clip's bundled BPE tokenizer)."""
    from open_clip import get_model_config

    return str((get_model_config(name) or {}).get("text_cfg", {}).get("hf_tokenizer_name", ""))


def _clean_tag(tag: str) -> str:
    """A pretrained tag as open_clip normalises it ('LAION2B-s34b' -> 'laion2b_s34b')."""
    return tag.strip().lower().replace("-", "_")


def _tags(name: str) -> list[str]:
    from open_clip import list_pretrained_tags_by_model

    return list(list_pretrained_tags_by_model(name))


def _tags_hint(name: str) -> str:
    tags = _tags(name)
    if not tags:
        return f"open_clip has no pretrained tags for {name}"
    return "tags: " + ", ".join(tags[:8]) + (", ..." if len(tags) > 8 else "")


def _download_hint(name: str, tag: str | None) -> str:
    """The command that fetches a model's weights (its first tag if none is given)."""
    tags = _tags(name)
    tag = tag or (tags[0] if tags else "TAG")
    return f"run `hybrid-search models download {name} --pretrained {tag}`"


def _tag_cfg(name: str, tag: str) -> dict[str, Any]:
    """open_clip's record of a model's pretrained tag ({} if there is none)."""
    from open_clip.pretrained import get_pretrained_cfg

    if not tag.strip() or tag.strip() == RANDOM:
        return {}
    return dict(get_pretrained_cfg(name.replace("/", "-"), _clean_tag(tag)))


def _hf_location(hf_hub: str) -> tuple[str, str]:
    """Repository and file of an open_clip `hf_hub` entry ('org/repo/' means the default file)."""
    from open_clip.constants import HF_WEIGHTS_NAME

    repo_id, filename = os.path.split(hf_hub)
    return repo_id, filename or HF_WEIGHTS_NAME


def _safetensors_alternatives(filename: str) -> list[str]:
    """The .safetensors names open_clip tries before a pickled checkpoint."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    if filename == HF_WEIGHTS_NAME:
        return [HF_SAFE_WEIGHTS_NAME]
    if filename.endswith((".bin", ".pth")):
        return [filename[:-4] + ".safetensors"]
    return []


def _looks_like_path(value: str) -> bool:
    return (os.sep in value or "/" in value or value.startswith(("~", "."))
            or value.lower().endswith(_CHECKPOINT_SUFFIXES))


def _file_digest(path: Path) -> str:
    """sha256 of a file, remembered per process by (path, size, mtime)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _DIGESTS_LOCK:
        if key in _DIGESTS:
            return _DIGESTS[key]
    try:
        with path.open("rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
    except OSError as e:
        raise ModelUnavailableError(
            f"setting clip_pretrained: cannot read checkpoint file {path}: {e.strerror}"
        ) from None
    with _DIGESTS_LOCK:
        _DIGESTS[key] = digest
    return digest


def _eval_transform(cfg: dict[str, Any]) -> tuple[list[Any], np.ndarray, np.ndarray]:
    """open_clip's eval transform split into its PIL steps and the mean and std it applies."""
    from open_clip.transform import PreprocessCfg, image_transform_v2

    transform = image_transform_v2(PreprocessCfg(**cfg), is_train=False)
    steps = list(transform.transforms)
    # It ends with ToTensor and Normalize; those two are done in numpy (no torch per image).
    if "ToTensor" not in type(steps[-2]).__name__ or type(steps[-1]).__name__ != "Normalize":
        raise ModelUnavailableError(f"open_clip's eval transform has an unknown form: {transform}")
    mean = np.asarray(steps[-1].mean, dtype=np.float32)
    std = np.asarray(steps[-1].std, dtype=np.float32)
    return steps[:-2], mean, std


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
