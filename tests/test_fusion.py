"""Tests for score normalisation and fusion."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hybrid_search.fusion import FusedHit, fuse, linear_fusion, minmax, rrf, zscore


def order(hits: list[FusedHit]) -> list[int]:
    """Return the ids of fused hits, in order."""
    return [h.id for h in hits]


def by_id(hits: list[FusedHit]) -> dict[int, FusedHit]:
    """Return fused hits keyed by id."""
    return {h.id: h for h in hits}


# -- minmax ------------------------------------------------------------------------------


def test_minmax_scales_to_unit_interval() -> None:
    assert minmax([(1, 10.0), (2, 5.0), (3, 0.0)]) == {1: 1.0, 2: 0.5, 3: 0.0}


def test_minmax_negative_scores() -> None:
    out = minmax([(7, -1.0), (8, -3.0), (9, -2.0)])
    assert out == {7: 1.0, 8: 0.0, 9: 0.5}


def test_minmax_single_hit_is_one() -> None:
    assert minmax([(4, 0.123)]) == {4: 1.0}
    assert minmax([(4, -17.0)]) == {4: 1.0}


def test_minmax_all_equal_are_one() -> None:
    assert minmax([(1, 2.5), (2, 2.5), (3, 2.5)]) == {1: 1.0, 2: 1.0, 3: 1.0}


def test_minmax_empty() -> None:
    assert minmax([]) == {}
    assert minmax([], lower=0.0) == {}


def test_minmax_lower_bound_scales_from_it() -> None:
    # Two nearly equal BM25 scores are not stretched to 1 and 0.
    out = minmax([(1, 10.0), (2, 9.5)], lower=0.0)
    assert out == {1: 1.0, 2: pytest.approx(0.95)}
    # A single hit or equal hits still get 1.
    assert minmax([(1, 3.0)], lower=0.0) == {1: 1.0}
    assert minmax([(1, 3.0), (2, 3.0)], lower=0.0) == {1: 1.0, 2: 1.0}


def test_minmax_lower_bound_above_list_minimum_is_ignored() -> None:
    assert minmax([(1, 10.0), (2, 0.0)], lower=5.0) == minmax([(1, 10.0), (2, 0.0)])


# -- zscore ------------------------------------------------------------------------------


def test_zscore_values() -> None:
    # mean 2, population std sqrt(2/3)
    out = zscore([(1, 1.0), (2, 2.0), (3, 3.0)])
    std = math.sqrt(2 / 3)
    assert out[1] == pytest.approx(-1 / std)
    assert out[2] == pytest.approx(0.0)
    assert out[3] == pytest.approx(1 / std)
    values = list(out.values())
    assert sum(values) / 3 == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(sum(v * v for v in values) / 3) == pytest.approx(1.0)


def test_zscore_all_equal_are_zero() -> None:
    assert zscore([(1, 4.0), (2, 4.0)]) == {1: 0.0, 2: 0.0}
    assert zscore([(1, 4.0)]) == {1: 0.0}


def test_zscore_empty() -> None:
    assert zscore([]) == {}


# -- rrf ---------------------------------------------------------------------------------


def test_rrf_default_k_and_rank_from_one() -> None:
    out = rrf([(10, 0.9), (20, 0.5), (30, 0.1)])
    assert out == {10: 1 / 61, 20: 1 / 62, 30: 1 / 63}


def test_rrf_ignores_scores_uses_order() -> None:
    # The order given is the ranking, whatever the raw scores say.
    out = rrf([(1, 0.0), (2, 100.0)], k=1)
    assert out == {1: 1 / 2, 2: 1 / 3}


def test_rrf_custom_k() -> None:
    assert rrf([(5, 1.0), (6, 0.5)], k=10) == {5: 1 / 11, 6: 1 / 12}


def test_rrf_duplicates_keep_first_rank() -> None:
    out = rrf([(1, 0.9), (2, 0.8), (1, 0.7), (3, 0.1)], k=60)
    assert out == {1: 1 / 61, 2: 1 / 62, 3: 1 / 64}


@pytest.mark.parametrize("k", [0, -1])
def test_rrf_k_below_one_raises(k: int) -> None:
    with pytest.raises(ValueError, match="k"):
        rrf([(1, 1.0)], k=k)


def test_rrf_empty() -> None:
    assert rrf([]) == {}


# -- linear_fusion -----------------------------------------------------------------------


def test_linear_fusion_weighted_mean_with_floor() -> None:
    out = linear_fusion(
        {"a": {1: 1.0, 2: 0.5}, "b": {2: 1.0, 3: 0.25}},
        {"a": 1.0, "b": 3.0},
        {"a": 0.0, "b": -1.0},
    )
    assert out[1] == pytest.approx((1.0 * 1.0 + 3.0 * -1.0) / 4)
    assert out[2] == pytest.approx((1.0 * 0.5 + 3.0 * 1.0) / 4)
    assert out[3] == pytest.approx((1.0 * 0.0 + 3.0 * 0.25) / 4)


def test_linear_fusion_all_signals_not_applicable_gives_zero() -> None:
    out = linear_fusion({"a": {1: 1.0}}, {"a": 1.0}, {"a": 0.0}, {"a": {1}})
    assert out == {1: 0.0}


# -- fuse: linear ------------------------------------------------------------------------

TEXT = [(1, 10.0), (2, 6.0), (3, 2.0)]
IMAGE = [(2, 0.9), (4, 0.6), (1, 0.3)]


def test_fuse_linear_minmax_scores() -> None:
    hits = fuse({"text": TEXT, "image": IMAGE}, {"text": 0.5, "image": 0.5})
    got = {h.id: h.score for h in hits}
    # text minmax: 1 -> 1, 2 -> 0.5, 3 -> 0; image minmax: 2 -> 1, 4 -> 0.5, 1 -> 0
    assert got == pytest.approx({1: 0.5, 2: 0.75, 3: 0.0, 4: 0.25})
    assert order(hits) == [2, 1, 4, 3]


def test_fuse_id_in_both_lists_beats_ids_in_one() -> None:
    text = [(1, 5.0), (2, 4.0), (9, 0.0)]
    image = [(3, 0.9), (2, 0.85), (8, 0.1)]
    hits = fuse({"text": text, "image": image}, {"text": 0.5, "image": 0.5})
    assert hits[0].id == 2
    assert hits[0].score > max(h.score for h in hits[1:])


def test_fuse_weights_shift_the_winner() -> None:
    text = [(1, 1.0), (2, 0.6), (3, 0.0)]
    image = [(2, 0.8), (1, 0.5), (3, 0.2)]
    # text norm: 1 -> 1, 2 -> 0.6; image norm: 2 -> 1, 1 -> 0.5
    # alpha 0.2: id1 = 0.8*1 + 0.2*0.5 = 0.9, id2 = 0.8*0.6 + 0.2*1 = 0.68
    # alpha 0.8: id1 = 0.2*1 + 0.8*0.5 = 0.6, id2 = 0.2*0.6 + 0.8*1 = 0.92
    low = fuse({"text": text, "image": image}, {"text": 0.8, "image": 0.2})
    high = fuse({"text": text, "image": image}, {"text": 0.2, "image": 0.8})
    assert low[0].id == 1
    assert high[0].id == 2
    assert low[0].score == pytest.approx(0.9)
    assert high[0].score == pytest.approx(0.92)


def test_fuse_weights_need_not_sum_to_one() -> None:
    ranked = {"text": TEXT, "image": IMAGE}
    a = fuse(ranked, {"text": 1.0, "image": 1.0})
    b = fuse(ranked, {"text": 0.5, "image": 0.5})
    assert order(a) == order(b)
    assert [h.score for h in a] == pytest.approx([h.score for h in b])


def test_fuse_rrf_order_and_scores() -> None:
    text = [(1, 9.0), (2, 8.0), (3, 7.0)]
    image = [(3, 0.9), (2, 0.8), (4, 0.7)]
    hits = fuse({"text": text, "image": image}, {"text": 1.0, "image": 1.0}, method="rrf")
    got = {h.id: h.score for h in hits}
    assert got[2] == pytest.approx((1 / 62 + 1 / 62) / 2)
    assert got[3] == pytest.approx((1 / 63 + 1 / 61) / 2)
    assert got[1] == pytest.approx((1 / 61 + 0) / 2)
    assert got[4] == pytest.approx((0 + 1 / 63) / 2)
    # 1/61+1/63 > 2/62, so 3 beats 2; both beat the ids found by one signal.
    assert order(hits) == [3, 2, 1, 4]


def test_fuse_rrf_uses_k() -> None:
    hits = fuse({"text": [(1, 1.0), (2, 0.5)]}, {"text": 1.0}, method="rrf", k=1)
    assert [(h.id, h.score) for h in hits] == [(1, 0.5), (2, pytest.approx(1 / 3))]


def test_fuse_rrf_ignores_normalization_argument() -> None:
    ranked = {"text": TEXT, "image": IMAGE}
    w = {"text": 1.0, "image": 1.0}
    a = fuse(ranked, w, method="rrf", normalization="minmax")
    b = fuse(ranked, w, method="rrf", normalization="zscore")
    assert [(h.id, h.score) for h in a] == [(h.id, h.score) for h in b]


def test_fuse_rrf_bad_k_raises() -> None:
    with pytest.raises(ValueError):
        fuse({"text": TEXT}, {"text": 1.0}, method="rrf", k=0)


# -- the not-applicable rule --------------------------------------------------------------


def test_not_applicable_ranks_on_image_alone() -> None:
    text = [(1, 5.0), (2, 1.0)]
    image = [(3, 0.9), (1, 0.5), (2, 0.1)]
    alpha = 0.4
    hits = by_id(
        fuse(
            {"text": text, "image": image},
            {"text": 1 - alpha, "image": alpha},
            not_applicable={"text": {3}},
        )
    )
    # 3 has no words: ranked on its (perfect) image score alone.
    assert hits[3].score == pytest.approx(1.0)
    assert hits[3].normalized["text"] is None
    assert hits[3].signals["text"] is None
    assert hits[3].signals["image"] == 0.9


def test_applicable_but_absent_gets_text_floor() -> None:
    text = [(1, 5.0), (2, 1.0)]
    image = [(3, 0.9), (1, 0.5), (2, 0.1)]
    alpha = 0.4
    hits = by_id(fuse({"text": text, "image": image}, {"text": 1 - alpha, "image": alpha}))
    # 3 has words but none matched: text floor 0, so alpha * image score.
    assert hits[3].score == pytest.approx(alpha * 1.0)
    assert hits[3].normalized["text"] == 0.0
    assert hits[3].signals["text"] is None


def test_not_applicable_beats_applicable_absent() -> None:
    text = [(1, 5.0), (2, 1.0)]
    image = [(3, 0.9), (4, 0.9), (1, 0.5), (2, 0.1)]
    hits = fuse(
        {"text": text, "image": image},
        {"text": 0.5, "image": 0.5},
        not_applicable={"text": {4}},
    )
    assert by_id(hits)[4].score == pytest.approx(1.0)
    assert by_id(hits)[3].score == pytest.approx(0.5)
    assert order(hits).index(4) < order(hits).index(3)


def test_not_applicable_image_side() -> None:
    text = [(1, 4.0), (2, 2.0), (3, 0.0)]
    image = [(1, 0.9), (3, 0.1)]
    hits = by_id(
        fuse(
            {"text": text, "image": image},
            {"text": 0.5, "image": 0.5},
            not_applicable={"image": {2}},
        )
    )
    assert hits[2].score == pytest.approx(0.5)  # text alone: minmax 0.5
    assert hits[2].normalized == {"text": 0.5, "image": None}


def test_not_applicable_id_without_any_list_is_not_invented() -> None:
    hits = fuse({"text": TEXT, "image": IMAGE}, {"text": 0.5, "image": 0.5},
                not_applicable={"text": {99}})
    assert 99 not in by_id(hits)


def test_rrf_not_applicable_and_floor() -> None:
    text = [(1, 3.0)]
    image = [(2, 0.9), (3, 0.8), (1, 0.1)]
    hits = by_id(
        fuse({"text": text, "image": image}, {"text": 1.0, "image": 1.0}, method="rrf",
             not_applicable={"text": {2}})
    )
    assert hits[2].score == pytest.approx(1 / 61)  # image term alone
    assert hits[3].score == pytest.approx((0 + 1 / 62) / 2)  # no text term


# -- zscore fusion ------------------------------------------------------------------------


def test_zscore_floor_is_list_minimum() -> None:
    text = [(1, 3.0), (2, 2.0), (3, 1.0)]
    image = [(4, 0.9), (1, 0.1)]
    hits = by_id(
        fuse({"text": text, "image": image}, {"text": 0.5, "image": 0.5},
             normalization="zscore")
    )
    tz = zscore(text)
    iz = zscore(image)
    # 4 is absent from text: it gets the lowest text z-score.
    assert hits[4].normalized["text"] == pytest.approx(min(tz.values()))
    assert hits[4].score == pytest.approx((min(tz.values()) + iz[4]) / 2)
    # 2 and 3 are absent from image: they get the lowest image z-score.
    assert hits[2].normalized["image"] == pytest.approx(min(iz.values()))
    assert hits[3].score == pytest.approx((tz[3] + min(iz.values())) / 2)


# -- weights ------------------------------------------------------------------------------


def test_fuse_lower_bounds() -> None:
    text = [(1, 10.0), (2, 9.8), (3, 9.6)]
    image = [(3, 0.9), (4, 0.8), (1, 0.1)]
    ranked = {"text": text, "image": image}
    w = {"text": 0.5, "image": 0.5}
    plain = by_id(fuse(ranked, w))
    bounded = by_id(fuse(ranked, w, lower_bounds={"text": 0.0}))
    # Without a bound the last of three near-equal text scores becomes 0.
    assert plain[3].normalized["text"] == 0.0
    assert bounded[3].normalized["text"] == pytest.approx(0.96)
    assert bounded[3].score == pytest.approx((0.96 + 1.0) / 2)
    # The image side is still scaled from its own minimum.
    assert bounded[1].normalized["image"] == 0.0
    # An applicable-but-absent id still gets the floor 0.
    assert bounded[4].normalized["text"] == 0.0
    # zscore and rrf ignore the bound.
    for kwargs in ({"normalization": "zscore"}, {"method": "rrf"}):
        a = fuse(ranked, w, **kwargs)  # type: ignore[arg-type]
        b = fuse(ranked, w, lower_bounds={"text": 0.0}, **kwargs)  # type: ignore[arg-type]
        assert [(h.id, h.score) for h in a] == [(h.id, h.score) for h in b]


def test_zero_weight_signal_ignored() -> None:
    hits = fuse({"text": TEXT, "image": IMAGE}, {"text": 1.0, "image": 0.0})
    # Only text ranks: image-only id 4 is not a candidate; scores are text minmax.
    assert order(hits) == [1, 2, 3]
    assert [h.score for h in hits] == [1.0, 0.5, 0.0]
    for h in hits:
        assert h.normalized["image"] is None
    assert by_id(hits)[2].signals["image"] == 0.9  # raw score still reported


def test_signal_without_weight_entry_ignored() -> None:
    hits = fuse({"text": TEXT, "image": IMAGE}, {"image": 1.0})
    assert order(hits) == [2, 4, 1]
    assert [h.score for h in hits] == pytest.approx([1.0, 0.5, 0.0])


def test_signals_and_normalized_fields() -> None:
    hits = by_id(fuse({"text": TEXT, "image": IMAGE}, {"text": 0.5, "image": 0.5}))
    assert hits[1].signals == {"text": 10.0, "image": 0.3}
    assert hits[1].normalized == {"text": 1.0, "image": 0.0}
    assert hits[3].signals == {"text": 2.0, "image": None}
    assert hits[3].normalized == {"text": 0.0, "image": 0.0}
    assert hits[4].signals == {"text": None, "image": 0.6}
    assert hits[4].normalized == {"text": 0.0, "image": pytest.approx(0.5)}


def test_stable_tie_break_by_id() -> None:
    text = [(5, 1.0), (3, 1.0), (9, 1.0), (1, 1.0)]
    hits = fuse({"text": text}, {"text": 1.0})
    assert order(hits) == [1, 3, 5, 9]
    assert all(h.score == 1.0 for h in hits)


def test_empty_input() -> None:
    assert fuse({}, {"text": 0.5}) == []
    assert fuse({"text": [], "image": []}, {"text": 0.5, "image": 0.5}) == []


@pytest.mark.parametrize("kwargs", [{"method": "borda"}, {"normalization": "l2"}])
def test_invalid_method_or_normalization(kwargs: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="unknown"):
        fuse({"text": TEXT}, {"text": 1.0}, **kwargs)


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf, -math.inf])
def test_invalid_weight_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="weight of image"):
        fuse({"text": TEXT, "image": IMAGE}, {"text": 0.5, "image": bad})


# -- properties ---------------------------------------------------------------------------

scores = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
ranked_list = st.lists(st.tuples(st.integers(0, 30), scores), max_size=20)
weight = st.floats(min_value=0.0, max_value=10.0, allow_nan=False)


@given(
    text=ranked_list,
    image=ranked_list,
    wt=weight,
    wi=weight,
    na_text=st.sets(st.integers(0, 30)),
    na_image=st.sets(st.integers(0, 30)),
)
def test_minmax_fusion_in_unit_interval_and_sorted(
    text: list[tuple[int, float]],
    image: list[tuple[int, float]],
    wt: float,
    wi: float,
    na_text: set[int],
    na_image: set[int],
) -> None:
    hits = fuse(
        {"text": text, "image": image},
        {"text": wt, "image": wi},
        not_applicable={"text": na_text, "image": na_image},
    )
    for h in hits:
        assert 0.0 <= h.score <= 1.0
    keys = [(-h.score, h.id) for h in hits]
    assert keys == sorted(keys)
    assert len({h.id for h in hits}) == len(hits)


@given(text=ranked_list, image=ranked_list)
def test_rrf_fusion_sorted_and_bounded(
    text: list[tuple[int, float]], image: list[tuple[int, float]]
) -> None:
    hits = fuse({"text": text, "image": image}, {"text": 1.0, "image": 1.0}, method="rrf")
    for h in hits:
        assert 0.0 < h.score <= 1 / 61
    keys = [(-h.score, h.id) for h in hits]
    assert keys == sorted(keys)


def test_prior_stands_in_for_a_not_applicable_signal() -> None:
    ranked = {"text": [(1, 5.0), (2, 1.0)], "image": [(3, 0.9), (1, 0.6), (2, 0.1)]}
    weights = {"text": 0.5, "image": 0.5}
    dropped = {h.id: h.score for h in fuse(ranked, weights, not_applicable={"text": {3}})}
    primed = {h.id: h.score for h in fuse(ranked, weights, not_applicable={"text": {3}},
                                          prior=0.5)}
    assert dropped[3] == pytest.approx(1.0)  # ranked on its looks alone
    assert primed[3] == pytest.approx(0.5 * 0.5 + 0.5 * 1.0)
    assert primed[1] > primed[3] > primed[2]  # a word match first, an unknown before a miss
    # RRF ignores the prior: it has no score scale to put a neutral value on.
    rrf_scores = {h.id: h.score for h in fuse(ranked, weights, method="rrf",
                                              not_applicable={"text": {3}}, prior=0.5)}
    assert rrf_scores[3] == pytest.approx(1 / 61)
