"""Words find photos that have no words: zero-shot search through the CNN's ImageNet labels.

ConSE (Norouzi et al., "Zero-Shot Learning by Convex Combination of Semantic Embeddings",
ICLR 2014): a photo's vector is the probability-weighted mean of the sentence embeddings of
its most likely ImageNet labels, so it lives in the same MiniLM space as a query's embedding
and one dot product compares them. The 1000 label embeddings are computed once (and cached on
disk); after that, `image_vectors` is a small matrix product over the logits ingest already has.

What we changed from the paper, each measured in `docs/zeroshot.md` (`bench/zeroshot.py`):
labels are embedded as "a photo of a {name}." averaged with the WordNet gloss, the softmax is
flattened by a temperature and all 1000 labels are kept, the mean label embedding is
subtracted (a hubness correction: otherwise every photo leans towards the same centre), and
the weighted mean is replaced by a ridge-regression decoding of the weights (`ridge_decoder`).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .embedding import l2_normalize
from .exceptions import ModelUnavailableError
from .text_embedding import TextEmbedder

__all__ = [
    "DEFAULT_CONSE",
    "LABEL_TEXTS",
    "ConSE",
    "ConSEParams",
    "ImageNetClass",
    "auto_tags",
    "default_conse",
    "imagenet_classes",
    "imagenet_labels",
    "label_texts",
    "ridge_decoder",
    "softmax",
]

NUM_CLASSES = 1000
LABELS_FILE = Path(__file__).parent / "data" / "imagenet_labels.json"
SHIPPED_DIR = Path(__file__).parent / "data"

# Bump when the vectors change for the same parameters (new label texts, new maths), so that
# vectors stored under the old model_id are recomputed.
METHOD_VERSION = 1
# Every ConSE model id starts with this (`check --repair` drops those of an earlier method).
MODEL_PREFIX = "conse-"

# How a class is put into words before MiniLM embeds it. Several texts per class are embedded
# separately and averaged.
LABEL_TEXTS = ("class", "name", "synonyms", "prompt", "prompt+gloss")


@dataclass(frozen=True)
class ImageNetClass:
    """One ImageNet class: WordNet id, names (everyday name first) and WordNet gloss."""

    wnid: str
    names: tuple[str, ...]
    gloss: str

    @property
    def tag(self) -> str:
        """The class as a short lower-case tag, e.g. 'tabby cat'."""
        return self.names[0].lower()


@functools.cache
def imagenet_labels() -> tuple[ImageNetClass, ...]:
    """The 1000 classes in logit order, from the bundled `data/imagenet_labels.json`."""
    try:
        doc = json.loads(LABELS_FILE.read_text(encoding="utf-8"))
        classes = tuple(
            ImageNetClass(c["wnid"], tuple(c["names"]), c["gloss"]) for c in doc["classes"]
        )
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelUnavailableError(f"cannot read the ImageNet labels {LABELS_FILE}: {e}") from None
    if len(classes) != NUM_CLASSES or any(not c.names for c in classes):
        raise ModelUnavailableError(f"{LABELS_FILE} must list {NUM_CLASSES} named classes")
    return classes


def imagenet_classes() -> list[str]:
    """torchvision's 1000 ImageNet class names, in the order of the CNN's logits."""
    # Part of the weights' metadata in the torchvision wheel: no download.
    from torchvision.models import EfficientNet_B0_Weights

    return list(EfficientNet_B0_Weights.IMAGENET1K_V1.meta["categories"])


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of logits / temperature, as float32."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p.astype(np.float32)


def _check_logits(logits: np.ndarray) -> np.ndarray:
    x = np.asarray(logits, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != NUM_CLASSES:
        raise ValueError(f"logits must have shape (n, {NUM_CLASSES}), not {x.shape}")
    return x


def auto_tags(
    logits: np.ndarray, threshold: float, max_tags: int = 5
) -> list[list[tuple[str, float]]]:
    """Per photo, the labels whose probability is at least `threshold`, best first."""
    p = softmax(_check_logits(logits))
    if max_tags <= 0:
        return [[] for _ in range(len(p))]
    classes = imagenet_labels()
    out = []
    for row in p:
        best = np.argsort(-row, kind="stable")[:max_tags]
        out.append([(classes[j].tag, float(row[j])) for j in best if row[j] >= threshold])
    return out


@dataclass(frozen=True)
class ConSEParams:
    """How ConSE turns logits into a vector; see docs/zeroshot.md for what each one buys."""

    top_k: int = 10
    """Labels kept per photo."""
    temperature: float = 1.0
    """Softmax temperature: above 1 the runner-up labels weigh more."""
    label_text: str = "class"
    """How a class is put into words (one of LABEL_TEXTS)."""
    centre: bool = False
    """Subtract the mean label embedding (hubness correction)."""
    ridge: float = 0.0
    """0: the photo vector is the weighted mean of the label embeddings (ConSE). Above 0: it
    is the ridge-regression decoding of the weights, the vector x minimising
    ||L x - p||^2 + lambda ||x||^2, with lambda = ridge x the mean eigenvalue of L^T L."""

    def __post_init__(self) -> None:
        if not 1 <= self.top_k <= NUM_CLASSES:
            raise ValueError(f"top_k must be from 1 to {NUM_CLASSES}, not {self.top_k}")
        if not (np.isfinite(self.temperature) and self.temperature > 0):
            raise ValueError(f"temperature must be a number above 0, not {self.temperature}")
        if self.label_text not in LABEL_TEXTS:
            raise ValueError(f"label_text must be one of {LABEL_TEXTS}, not {self.label_text!r}")
        if not (np.isfinite(self.ridge) and self.ridge >= 0):
            raise ValueError(f"ridge must be a number from 0 up, not {self.ridge}")

    @property
    def slug(self) -> str:
        """The parameters as a short id, e.g. 'prompt+gloss-k50-t3-centred-ridge4'."""
        centre = "-centred" if self.centre else ""
        ridge = f"-ridge{self.ridge:g}" if self.ridge else ""
        return f"{self.label_text}-k{self.top_k}-t{self.temperature:g}{centre}{ridge}"


# Chosen on the development split of Flickr8k (docs/zeroshot.md): the best dev MRR of a
# top_k x temperature x ridge grid. All labels are kept: with centred label embeddings the long
# tail no longer drags every photo towards the same centre; the ridge decoding keeps groups of
# near-identical labels (dog breeds) from outvoting the rest.
DEFAULT_CONSE = ConSEParams(
    top_k=1000, temperature=4.0, label_text="prompt+gloss", centre=True, ridge=4.0
)


def label_texts(label_text: str) -> list[list[str]]:
    """The texts embedded for each of the 1000 classes (averaged when more than one)."""
    if label_text == "class":
        return [[name] for name in imagenet_classes()]
    classes = imagenet_labels()
    if label_text == "name":
        return [[c.names[0]] for c in classes]
    if label_text == "synonyms":
        return [[", ".join(c.names)] for c in classes]
    if label_text == "prompt":
        return [[f"a photo of a {c.names[0]}."] for c in classes]
    if label_text == "prompt+gloss":
        return [[f"a photo of a {c.names[0]}.", c.gloss] for c in classes]
    raise ValueError(f"label_text must be one of {LABEL_TEXTS}, not {label_text!r}")


def ridge_decoder(labels: np.ndarray, ridge: float) -> np.ndarray:
    """L (L^T L + lambda I)^-1 for label embeddings L (n, dim), lambda = ridge x mean eigenvalue.

    For label weights p, p @ decoder is argmin_x ||L x - p||^2 + lambda ||x||^2: the point in
    sentence space whose similarities to the labels best reproduce the weights. Where many
    labels share a direction (118 dog breeds), the weighted mean counts it once per label;
    the least-squares solution counts it once. As ridge grows this tends to the (scaled)
    weighted mean L^T p, so ConSE is its limit.
    """
    lab = np.asarray(labels, dtype=np.float64)
    gram = lab.T @ lab
    lam = ridge * np.trace(gram) / gram.shape[0]
    # Solve instead of inverting: (L^T L + lambda I) is symmetric positive definite.
    decoder = np.linalg.solve(gram + lam * np.eye(gram.shape[0]), lab.T).T
    return decoder.astype(np.float32)


class ConSE:
    """Photos and words as vectors in the text model's space, through ImageNet labels."""

    def __init__(
        self,
        embedder: TextEmbedder,
        params: ConSEParams = DEFAULT_CONSE,
        cache_dir: Path | None = None,
    ) -> None:
        self.embedder = embedder
        self.params = params
        self.cache_dir = cache_dir
        self.dim: int = embedder.dim
        self.model_id = f"{MODEL_PREFIX}v{METHOD_VERSION}-{embedder.model_id}-{params.slug}"
        self._labels: np.ndarray | None = None
        self._lock = threading.Lock()

    def label_matrix(self) -> np.ndarray:
        """The (1000, dim) matrix a photo's label weights are multiplied by.

        The label embeddings (centred if the params say so); with `ridge`, the decoding
        matrix L (L^T L + lambda I)^-1 instead, so that weights @ matrix is the ridge solution.
        """
        with self._lock:
            if self._labels is None:
                matrix = self._load_or_build()
                if self.params.centre:
                    matrix = l2_normalize(matrix - matrix.mean(axis=0))
                if self.params.ridge:
                    matrix = ridge_decoder(matrix, self.params.ridge)
                self._labels = matrix
            return self._labels

    def _load_or_build(self) -> np.ndarray:
        texts = label_texts(self.params.label_text)
        # Keyed by what the embeddings depend on (not top_k, temperature or centring), and by
        # the texts themselves, so an edited labels file can never serve a stale matrix.
        digest = hashlib.sha256(json.dumps(texts).encode()).hexdigest()[:12]
        name = f"conse-labels-{self.embedder.model_id}-{self.params.label_text}-{digest}.npy"
        # The default label matrix ships with the package (built by `python -m
        # hybrid_search.zeroshot`), so a new collection needs no minute of MiniLM encoding.
        shipped = _read_matrix(SHIPPED_DIR / name, (NUM_CLASSES, self.dim))
        if shipped is not None:
            return shipped
        path = self.cache_dir / name if self.cache_dir is not None else None
        if path is not None:
            cached = _read_matrix(path, (NUM_CLASSES, self.dim))
            if cached is not None:
                return cached
        matrix = self._embed(texts)
        if path is not None:
            _write_matrix(path, matrix)
        return matrix

    def _embed(self, texts: list[list[str]]) -> np.ndarray:
        """Each class's texts embedded and averaged, normalised: (1000, dim)."""
        flat = [t for per_class in texts for t in per_class]
        vecs = self.embedder.encode_texts(flat)
        owner = np.repeat(np.arange(len(texts)), [len(t) for t in texts])
        sums = np.zeros((len(texts), vecs.shape[1]), dtype=np.float64)
        np.add.at(sums, owner, vecs)
        return l2_normalize(sums)

    def image_vectors(self, logits: np.ndarray) -> np.ndarray:
        """(n, 1000) ImageNet logits as (n, dim) normalised vectors."""
        x = _check_logits(logits)
        if len(x) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        k, p = self.params.top_k, softmax(x, self.params.temperature)
        weights = p
        if k < NUM_CLASSES:
            top = np.argpartition(-p, k - 1, axis=1)[:, :k]
            weights = np.zeros_like(p)
            np.put_along_axis(weights, top, np.take_along_axis(p, top, axis=1), axis=1)
        # Rescaling the kept weights to sum to 1 would not change the normalised result.
        return l2_normalize(weights @ self.label_matrix())

    def query_vectors(self, texts: Sequence[str]) -> np.ndarray:
        """Query words as (n, dim) normalised vectors, comparable with `image_vectors`."""
        return self.query_from_embeddings(self.embedder.encode_texts([t.strip() for t in texts]))

    def query_from_embeddings(self, embeddings: np.ndarray) -> np.ndarray:
        """Query vectors from the text model's plain embeddings of the (stripped) query words."""
        # Plain sentence embeddings: prompt templates and centring on this side measured
        # worse or no better (docs/zeroshot.md).
        return np.asarray(embeddings, dtype=np.float32)


def _read_matrix(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    try:
        m = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if m.shape != shape or m.dtype != np.float32 or not np.isfinite(m).all():
        return None
    return m


def _write_matrix(path: Path, matrix: np.ndarray) -> None:
    # Written aside and renamed, so a concurrent reader sees the old file or the whole new
    # one. The cache only saves time: if it cannot be written, the matrix is still in memory.
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.save(f, matrix, allow_pickle=False)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    except OSError:
        pass


_SHARED: dict[tuple[int, str], tuple[TextEmbedder, ConSE]] = {}
_SHARED_LOCK = threading.Lock()


def default_conse(embedder: TextEmbedder, cache_dir: Path | None = None) -> ConSE:
    """The process-wide ConSE with DEFAULT_CONSE for this embedder and cache folder."""
    key = (id(embedder), str(cache_dir))
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        # The embedder is kept in the entry, so its id cannot be reused by another object.
        if hit is not None and hit[0] is embedder:
            return hit[1]
        conse = ConSE(embedder, DEFAULT_CONSE, cache_dir=cache_dir)
        _SHARED[key] = (embedder, conse)
        return conse


if __name__ == "__main__":  # build the shipped label matrix of the default parameters
    from .text_embedding import get_text_embedder

    _conse = ConSE(get_text_embedder(), DEFAULT_CONSE, cache_dir=SHIPPED_DIR)
    _conse.label_matrix()
    print(sorted(p.name for p in SHIPPED_DIR.glob("conse-labels-*.npy")))
