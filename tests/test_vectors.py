"""Tests for the in-memory exact nearest-neighbour index."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from hybrid_search.vectors import VectorIndex, top_k

DIM = 16


def units(rng: np.random.Generator, n: int, dim: int = DIM) -> tuple[np.ndarray, np.ndarray]:
    """Return (unit vectors, raw norms) of n random raw vectors."""
    raw = rng.standard_normal((n, dim)).astype(np.float32) * rng.uniform(0.5, 5.0, (n, 1))
    norms = np.linalg.norm(raw, axis=1).astype(np.float32)
    return (raw / norms[:, None]).astype(np.float32), norms


def brute_cosine(ids: np.ndarray, matrix: np.ndarray, q: np.ndarray, k: int) -> list[int]:
    """Return the ids of the k most similar rows, by exhaustive search."""
    sims = matrix.astype(np.float64) @ q.astype(np.float64)
    order = np.lexsort((ids, -sims))
    return [int(ids[j]) for j in order[:k]]


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (ids, unit vectors, norms) of 200 random rows with scattered ids."""
    rng = np.random.default_rng(42)
    matrix, norms = units(rng, 200)
    ids = rng.permutation(np.arange(1000, 3000, 10))[:200].astype(np.int64)
    return ids, matrix, norms


def test_cosine_matches_brute_force(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids, matrix, norms)
    assert len(index) == 200 and index.dim == DIM
    rng = np.random.default_rng(7)
    for _ in range(5):
        q, _ = units(rng, 1)
        q = q[0]
        got = index.search(q, 10)
        assert [i for i, _ in got] == brute_cosine(ids, matrix, q, 10)
        sims = dict(zip(ids.tolist(), (matrix @ q).tolist(), strict=True))
        for i, score in got:
            assert score == pytest.approx(sims[i], abs=1e-5)
        scores = [s for _, s in got]
        assert scores == sorted(scores, reverse=True)


def test_query_of_a_stored_vector_finds_itself(
    data: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids, matrix, norms)
    top_id, top_score = index.search(matrix[17], 1)[0]
    assert top_id == int(ids[17])
    assert top_score == pytest.approx(1.0, abs=1e-5)
    assert index.search(matrix[17], 3, exclude=[int(ids[17])])[0][0] != int(ids[17])


def test_euclidean_matches_raw_distance(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    raw = matrix.astype(np.float64) * norms[:, None].astype(np.float64)
    index = VectorIndex.from_arrays(ids, matrix, norms)
    rng = np.random.default_rng(8)
    qs, qnorms = units(rng, 4)
    for q, qn in zip(qs, qnorms, strict=True):
        got = index.search(q, 15, metric="euclidean", query_norm=float(qn))
        dist = np.linalg.norm(raw - q.astype(np.float64) * float(qn), axis=1)
        expected = np.sort(dist)[:15]
        by_id = dict(zip(ids.tolist(), dist.tolist(), strict=True))
        # Scores are minus the distance, best (closest) first.
        np.testing.assert_allclose([-s for _, s in got], expected, rtol=1e-4, atol=1e-3)
        for i, s in got:
            assert -s == pytest.approx(by_id[i], rel=1e-4, abs=1e-3)
        assert [i for i, _ in got] == [int(ids[j]) for j in np.argsort(dist)[:15]]


def test_euclidean_uses_norms_not_just_direction() -> None:
    # Same direction, different lengths: cosine ties, euclidean does not.
    v = np.array([1.0, 0.0], dtype=np.float32)
    index = VectorIndex.from_arrays(
        np.array([1, 2, 3]), np.stack([v, v, v]), np.array([1.0, 4.0, 10.0], dtype=np.float32)
    )
    cos = index.search(v, 3)
    assert [i for i, _ in cos] == [1, 2, 3]  # all 1.0, ties broken by id
    assert all(s == pytest.approx(1.0) for _, s in cos)
    euc = index.search(v, 3, metric="euclidean", query_norm=5.0)
    assert [i for i, _ in euc] == [2, 1, 3]
    assert [s for _, s in euc] == pytest.approx([-1.0, -4.0, -5.0])


def test_unknown_metric(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids, matrix, norms)
    with pytest.raises(ValueError, match="metric"):
        index.search(matrix[0], 3, metric="manhattan")


def test_add_replaces_existing_id() -> None:
    rng = np.random.default_rng(1)
    vecs, norms = units(rng, 3)
    index = VectorIndex()
    index.add([1, 2], vecs[:2], norms[:2])
    index.add([2], vecs[2:], np.array([9.5], dtype=np.float32))
    assert len(index) == 2
    assert index.ids().tolist() == [1, 2]
    got = index.get(2)
    assert got is not None
    np.testing.assert_array_equal(got[0], vecs[2])
    assert got[1] == 9.5
    top, score = index.search(vecs[2], 1)[0]
    assert top == 2 and score == pytest.approx(1.0, abs=1e-5)


def test_add_duplicate_ids_in_one_call_keeps_one_row() -> None:
    rng = np.random.default_rng(11)
    vecs, norms = units(rng, 3)
    index = VectorIndex(DIM)
    index.add([5, 6, 5], vecs, norms)
    # The later row for id 5 wins and the id is stored once.
    assert len(index) == 2
    assert sorted(index.ids().tolist()) == [5, 6]
    got = index.get(5)
    assert got is not None
    np.testing.assert_array_equal(got[0], vecs[2])
    assert [i for i, _ in index.search(vecs[0], 10)].count(5) == 1
    index.remove([5])
    assert 5 not in [i for i, _ in index.search(vecs[0], 10)]


def test_add_without_norms_defaults_to_one() -> None:
    index = VectorIndex()
    index.add([3], np.array([[0.0, 1.0]], dtype=np.float32))
    assert index.get(3) == (pytest.approx(np.array([0.0, 1.0])), 1.0)
    assert index.get(4) is None
    assert 3 in index and 4 not in index


def test_remove_moves_last_row(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids[:10], matrix[:10], norms[:10])
    last = int(ids[9])
    index.remove([int(ids[2]), 999999, int(ids[5])])
    assert len(index) == 8
    assert int(ids[2]) not in index and int(ids[5]) not in index
    assert last in index
    remaining = [j for j in range(10) if j not in (2, 5)]
    assert sorted(index.ids().tolist()) == sorted(int(ids[j]) for j in remaining)
    # Every remaining id keeps its own vector and norm, including the moved rows.
    for j in remaining:
        got = index.get(int(ids[j]))
        assert got is not None
        np.testing.assert_array_equal(got[0], matrix[j])
        assert got[1] == norms[j]
        top, score = index.search(matrix[j], 1)[0]
        assert top == int(ids[j])
        assert score == pytest.approx(1.0, abs=1e-5)
    q = matrix[0]
    got = index.search(q, 8, metric="euclidean", query_norm=2.0)
    sub_ids = ids[remaining]
    raw = matrix[remaining] * norms[remaining][:, None]
    dist = np.linalg.norm(raw - q * 2.0, axis=1)
    assert [i for i, _ in got] == [int(sub_ids[j]) for j in np.argsort(dist)]
    np.testing.assert_allclose([-s for _, s in got], np.sort(dist), rtol=1e-4, atol=1e-3)

    # New rows reuse the freed tail; the moved ids must still point at their own rows.
    index.add([int(ids[10]), int(ids[11])], matrix[10:12], norms[10:12])
    for j in [*remaining, 10, 11]:
        got_row = index.get(int(ids[j]))
        assert got_row is not None
        np.testing.assert_array_equal(got_row[0], matrix[j])
    # Removing a moved id removes that id, not whatever row its old position holds now.
    index.remove([last])
    assert len(index) == 9
    assert last not in index
    left = [i for i, _ in index.search(matrix[0], 20)]
    assert last not in left
    assert sorted(left) == sorted(int(ids[j]) for j in [*remaining, 10, 11] if j != 9)


def test_remove_everything_then_add_again() -> None:
    rng = np.random.default_rng(2)
    vecs, norms = units(rng, 4)
    index = VectorIndex.from_arrays(np.arange(4), vecs, norms)
    index.remove(range(4))
    assert len(index) == 0
    assert index.search(vecs[0], 5) == []
    index.add([10], vecs[:1], norms[:1])
    assert index.search(vecs[0], 5) == [(10, pytest.approx(1.0, abs=1e-5))]


def test_exclude(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids, matrix, norms)
    q = matrix[3]
    full = index.search(q, 10)
    skip = [full[0][0], full[4][0], 123456]
    got = index.search(q, 8, exclude=skip)
    assert [i for i, _ in got] == [i for i, _ in full if i not in skip][:8]


def test_k_larger_than_n_and_non_positive() -> None:
    rng = np.random.default_rng(3)
    vecs, norms = units(rng, 5)
    index = VectorIndex.from_arrays(np.arange(5), vecs, norms)
    got = index.search(vecs[0], 100)
    assert len(got) == 5
    assert sorted(i for i, _ in got) == list(range(5))
    assert index.search(vecs[0], 0) == []
    assert index.search(vecs[0], -3) == []
    assert index.search(vecs[0], 5, exclude=range(5)) == []


def test_empty_index() -> None:
    index = VectorIndex()
    assert len(index) == 0
    assert index.search(np.ones(DIM, dtype=np.float32), 5) == []
    ids, scores = index.scores(np.ones(3))
    assert ids.shape == (0,) and scores.shape == (0,)
    empty = VectorIndex.from_arrays(
        np.zeros(0, dtype=np.int64), np.zeros((0, 0), dtype=np.float32), np.zeros(0)
    )
    assert len(empty) == 0 and empty.dim == 0
    assert empty.search(np.ones(4, dtype=np.float32), 3) == []
    assert empty.ids().tolist() == []


def test_add_nothing_is_a_noop() -> None:
    index = VectorIndex(DIM)
    index.add([], np.zeros((0, DIM), dtype=np.float32), np.zeros(0, dtype=np.float32))
    assert len(index) == 0


def test_dimension_mismatch(data: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    ids, matrix, norms = data
    index = VectorIndex.from_arrays(ids[:5], matrix[:5], norms[:5])
    with pytest.raises(ValueError, match="dimension"):
        index.search(np.ones(DIM + 1, dtype=np.float32), 3)
    with pytest.raises(ValueError, match="dimension"):
        index.add([1], np.ones((1, DIM - 1), dtype=np.float32))
    assert len(index) == 5
    fixed = VectorIndex(4)
    with pytest.raises(ValueError, match="dimension"):
        fixed.add([1], np.ones((1, 8), dtype=np.float32))


def test_growth_across_many_small_adds() -> None:
    rng = np.random.default_rng(4)
    vecs, norms = units(rng, 300)
    index = VectorIndex()
    for start in range(0, 300, 7):
        stop = min(start + 7, 300)
        index.add(range(start, stop), vecs[start:stop], norms[start:stop])
        assert len(index) == stop
    assert index.ids().tolist() == list(range(300))
    assert index.nbytes >= 300 * DIM * 4
    for j in (0, 6, 7, 150, 299):
        got = index.get(j)
        assert got is not None
        np.testing.assert_array_equal(got[0], vecs[j])
        assert got[1] == norms[j]
    q = vecs[123]
    assert [i for i, _ in index.search(q, 20)] == brute_cosine(np.arange(300), vecs, q, 20)


def test_ties_broken_by_id_within_and_at_cutoff() -> None:
    v = np.array([0.6, 0.8], dtype=np.float32)
    ids = [50, 40, 30, 20, 10, 5, 60]
    index = VectorIndex()
    index.add(ids, np.tile(v, (len(ids), 1)))
    # Every score is equal, so the k best are the k smallest ids, in id order.
    assert [i for i, _ in index.search(v, 7)] == sorted(ids)
    assert [i for i, _ in index.search(v, 3)] == [5, 10, 20]


def test_top_k() -> None:
    ids = np.array([7, 3, 9, 1, 5], dtype=np.int64)
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.7], dtype=np.float32)
    assert [i for i, _ in top_k(ids, scores, 10)] == [3, 5, 7, 9, 1]
    assert [i for i, _ in top_k(ids, scores, 2)] == [3, 5]
    assert [i for i, _ in top_k(ids, scores, 3, exclude=[5])] == [3, 7, 9]
    assert top_k(ids, scores, 0) == []
    assert top_k(ids[:0], scores[:0], 3) == []
    got = top_k(ids, scores, 1)
    assert got == [(3, pytest.approx(0.9))]
    assert isinstance(got[0][0], int) and isinstance(got[0][1], float)


def test_top_k_tie_at_cutoff_takes_smallest_ids() -> None:
    ids = np.array([50, 40, 30, 20, 10, 5, 60], dtype=np.int64)
    scores = np.array([0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.9], dtype=np.float32)
    assert [i for i, _ in top_k(ids, scores, 3)] == [60, 5, 10]


def test_ids_and_get_return_copies() -> None:
    index = VectorIndex()
    index.add([1], np.array([[1.0, 0.0]], dtype=np.float32), np.array([2.0]))
    index.ids()[0] = 99
    vec, _ = index.get(1)  # type: ignore[misc]
    vec[0] = -1.0
    assert index.ids().tolist() == [1]
    assert index.get(1)[0].tolist() == [1.0, 0.0]  # type: ignore[index]


def test_concurrent_adds_and_searches() -> None:
    rng = np.random.default_rng(5)
    vecs, norms = units(rng, 400)
    index = VectorIndex(DIM)
    errors: list[BaseException] = []

    def writer(offset: int) -> None:
        try:
            for start in range(offset, 400, 40):
                index.add(range(start, start + 20), vecs[start:start + 20],
                          norms[start:start + 20])
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    def reader() -> None:
        try:
            for _ in range(50):
                for i, _ in index.search(vecs[0], 5):
                    assert 0 <= i < 400
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 20)]
    threads.append(threading.Thread(target=reader))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 400
    assert sorted(index.ids().tolist()) == list(range(400))
