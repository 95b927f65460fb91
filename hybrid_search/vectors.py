"""Exact nearest-neighbour search over an in-memory matrix of one model's vectors.

Rows are L2-normalised float32 vectors, so cosine similarity is one matrix-vector product.
Euclidean distance is on the raw features (unit vector times its stored length):
|a - b|^2 = |a|^2 + |b|^2 - 2|a||b| cos(a, b), so it costs the same product.
The matrix is derived from the database and kept current as images come and go.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import numpy as np

__all__ = ["VectorIndex", "top_k"]


class VectorIndex:
    """A growable matrix of unit vectors with their ids and raw norms; thread-safe."""

    def __init__(self, dim: int = 0) -> None:
        self.dim = dim
        self._ids = np.zeros(0, dtype=np.int64)
        self._matrix = np.zeros((0, dim), dtype=np.float32)
        self._norms = np.zeros(0, dtype=np.float32)
        self._count = 0
        self._pos: dict[int, int] = {}
        self._lock = threading.RLock()

    @classmethod
    def from_arrays(cls, ids: np.ndarray, matrix: np.ndarray, norms: np.ndarray) -> VectorIndex:
        """An index over given ids, unit vectors and norms."""
        dim = int(matrix.shape[1]) if matrix.ndim == 2 and len(matrix) else 0
        index = cls(dim)
        if len(ids):
            index.add(ids, matrix, norms)
        return index

    def __len__(self) -> int:
        return self._count

    def __contains__(self, image_id: object) -> bool:
        return image_id in self._pos

    @property
    def nbytes(self) -> int:
        """Memory held by the matrix, ids and norms (allocated capacity)."""
        return self._matrix.nbytes + self._ids.nbytes + self._norms.nbytes

    def ids(self) -> np.ndarray:
        """A copy of the ids, in row order."""
        with self._lock:
            return self._ids[: self._count].copy()

    def get(self, image_id: int) -> tuple[np.ndarray, float] | None:
        """The unit vector and raw norm of one id, if present."""
        with self._lock:
            row = self._pos.get(int(image_id))
            if row is None:
                return None
            return self._matrix[row].copy(), float(self._norms[row])

    def add(self, ids: Iterable[int], vectors: np.ndarray, norms: np.ndarray | None = None) -> None:
        """Add or replace rows; vectors must be unit length, norms are the raw lengths."""
        ids = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64)
        if not len(ids):
            return
        vectors = np.asarray(vectors, dtype=np.float32).reshape(len(ids), -1)
        norms_arr = (
            np.ones(len(ids), dtype=np.float32)
            if norms is None
            else np.asarray(norms, dtype=np.float32).reshape(len(ids))
        )
        if not len(ids):
            return
        with self._lock:
            if self.dim == 0:
                self.dim = vectors.shape[1]
                self._matrix = np.zeros((0, self.dim), dtype=np.float32)
            if vectors.shape[1] != self.dim:
                raise ValueError(
                    f"vector dimension {vectors.shape[1]} != index dimension {self.dim}"
                )
            pending: dict[int, int] = {}  # id -> last position in this call
            for n, i in enumerate(ids.tolist()):
                row = self._pos.get(i)
                if row is None:
                    pending[i] = n
                else:
                    self._matrix[row] = vectors[n]
                    self._norms[row] = norms_arr[n]
            fresh = list(pending.values())
            if not fresh:
                return
            need = self._count + len(fresh)
            if need > len(self._ids):
                self._grow(max(need, int(len(self._ids) * 1.5) + 16))
            sel = np.asarray(fresh)
            start = self._count
            self._ids[start:need] = ids[sel]
            self._matrix[start:need] = vectors[sel]
            self._norms[start:need] = norms_arr[sel]
            for offset, i in enumerate(ids[sel].tolist()):
                self._pos[i] = start + offset
            self._count = need

    def _grow(self, capacity: int) -> None:
        ids = np.zeros(capacity, dtype=np.int64)
        matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        norms = np.zeros(capacity, dtype=np.float32)
        ids[: self._count] = self._ids[: self._count]
        matrix[: self._count] = self._matrix[: self._count]
        norms[: self._count] = self._norms[: self._count]
        self._ids, self._matrix, self._norms = ids, matrix, norms

    def remove(self, ids: Iterable[int]) -> None:
        """Drop rows by id (unknown ids are ignored); the last row fills each hole."""
        with self._lock:
            for i in ids:
                row = self._pos.pop(int(i), None)
                if row is None:
                    continue
                last = self._count - 1
                if row != last:
                    moved = int(self._ids[last])
                    self._ids[row] = moved
                    self._matrix[row] = self._matrix[last]
                    self._norms[row] = self._norms[last]
                    self._pos[moved] = row
                self._count = last

    def scores(
        self, query: np.ndarray, metric: str = "cosine", query_norm: float = 1.0
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids, scores) for every row: cosine similarity, or minus the Euclidean distance."""
        q = np.asarray(query, dtype=np.float32).reshape(-1)
        with self._lock:
            n = self._count
            if n == 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            if q.shape[0] != self.dim:
                raise ValueError(f"query dimension {q.shape[0]} != index dimension {self.dim}")
            ids = self._ids[:n].copy()
            cos = self._matrix[:n] @ q
            if metric == "cosine":
                return ids, cos
            if metric != "euclidean":
                raise ValueError(f"unknown metric {metric!r}")
            norms = self._norms[:n]
            sq = norms * norms + query_norm * query_norm - 2.0 * norms * query_norm * cos
            return ids, -np.sqrt(np.maximum(sq, 0.0))

    def search(
        self,
        query: np.ndarray,
        k: int,
        metric: str = "cosine",
        query_norm: float = 1.0,
        exclude: Iterable[int] = (),
    ) -> list[tuple[int, float]]:
        """The k best (id, score) pairs, best first, ties broken by id."""
        ids, scores = self.scores(query, metric, query_norm)
        return top_k(ids, scores, k, exclude)


def top_k(
    ids: np.ndarray, scores: np.ndarray, k: int, exclude: Iterable[int] = ()
) -> list[tuple[int, float]]:
    """The k best (id, score) pairs of parallel arrays, best first, ties broken by id."""
    skip = [int(i) for i in exclude]
    if skip:
        keep = ~np.isin(ids, np.asarray(skip, dtype=np.int64))
        ids, scores = ids[keep], scores[keep]
    if k <= 0 or not len(ids):
        return []
    if k < len(ids):
        # Everything tied with the k-th best is kept, so the tie-break by id is exact.
        kth = np.partition(-scores, k - 1)[k - 1]
        part = np.flatnonzero(-scores <= kth)
    else:
        part = np.arange(len(ids))
    order = part[np.lexsort((ids[part], -scores[part]))][:k]
    return [(int(ids[j]), float(scores[j])) for j in order]
