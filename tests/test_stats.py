import itertools
import math

import pytest

from sdft_core.eval.stats import (mcnemar, mean_ci, paired_comparison, pass_at_k, pass_at_k_curve, seeded_subsample,
                             t_quantile)


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """Fraction of all k-subsets of n samples (c correct) that contain a correct sample."""
    samples = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(samples[i] for i in subset) for subset in subsets) / len(subsets)


def test_pass_at_k_matches_enumeration_over_subsets():
    for n in range(1, 9):
        for c in range(n + 1):
            for k in range(1, n + 1):
                assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_is_stable_for_large_n():
    assert pass_at_k(128, 1, 1) == pytest.approx(1 / 128)
    assert pass_at_k(128, 0, 128) == 0.0 and pass_at_k(128, 1, 128) == 1.0
    # 1 − C(n−c, k)/C(n, k) with exact integers as reference; the binomials alone overflow a float.
    n, c = 200, 3
    for k in (1, 16, 64, 128):
        exact = 1 - math.comb(n - c, k) / math.comb(n, k)
        assert pass_at_k(n, c, k) == pytest.approx(exact, rel=1e-12)
    curve = [pass_at_k(128, 5, k) for k in range(1, 129)]
    assert all(a <= b for a, b in zip(curve, curve[1:]))


def test_pass_at_k_rejects_impossible_arguments():
    for n, c, k in ((4, 5, 1), (4, 2, 5), (4, 2, 0), (0, 0, 1)):
        with pytest.raises(ValueError):
            pass_at_k(n, c, k)


def test_pass_at_k_curve_averages_over_problems_and_needs_enough_samples():
    curve = pass_at_k_curve([(4, 1), (4, 0), (4, 4)], ks=[1, 2])
    assert curve[1] == pytest.approx((1 / 4 + 0 + 1) / 3)
    assert curve[2] == pytest.approx((brute_force_pass_at_k(4, 1, 2) + 0 + 1) / 3)
    with pytest.raises(ValueError, match="problem 1 has n=2"):
        pass_at_k_curve([(4, 1), (2, 1)], ks=[1, 4])


def test_t_quantiles_match_tables():
    # Two-sided 95% critical values of Student's t (any statistics table).
    table = {1: 12.706204736174707, 2: 4.302652729911275, 3: 3.182446305284263, 4: 2.7764451051977987,
             10: 2.2281388519649385, 30: 2.0422724563012373}
    for df, expected in table.items():
        assert t_quantile(0.975, df) == pytest.approx(expected, rel=1e-9), df
    assert t_quantile(0.995, 2) == pytest.approx(9.924843200918284, rel=1e-9)


def test_mean_ci_by_hand():
    # Three seeds 0.5, 0.6, 0.7: mean 0.6, sample std 0.1, standard error 0.1/√3, t(0.975, 2) = 4.302652729911275.
    summary = mean_ci([0.5, 0.6, 0.7])
    assert summary.mean == pytest.approx(0.6)
    assert summary.half_width == pytest.approx(4.302652729911275 * 0.1 / math.sqrt(3))
    assert (summary.low, summary.high) == pytest.approx((0.6 - summary.half_width, 0.6 + summary.half_width))
    # Two seeds 1 and 3: mean 2, std √2, standard error 1, t(0.975, 1) = 12.706…
    assert mean_ci([1.0, 3.0]).half_width == pytest.approx(12.706204736174707)
    one = mean_ci([0.42])
    assert one.mean == 0.42 and math.isnan(one.half_width)
    with pytest.raises(ValueError):
        mean_ci([])


def test_mcnemar_counts_and_exact_p_value():
    a = {"q1": True, "q2": True, "q3": False, "q4": False, "q5": False, "q6": False, "q7": False, "q8": True}
    b = {"q1": True, "q2": False, "q3": True, "q4": True, "q5": True, "q6": True, "q7": True, "q8": True}
    result = mcnemar(a, b)
    assert (result.both_correct, result.only_a, result.only_b, result.both_wrong) == (2, 1, 5, 0)
    # Discordant pairs 6, the smaller side 1: p = 2·(C(6,0) + C(6,1))/2^6.
    assert result.p_value == pytest.approx(2 * 7 / 64)
    assert mcnemar({"x": 1}, {"x": 1}).p_value == 1.0


def test_paired_comparison_aligns_items_and_reports_differences():
    a, b = {"x": 0.0, "y": 1.0, "z": 0.0}, {"z": 1.0, "x": 1.0, "y": 1.0}
    result = paired_comparison(a, b)
    assert result["n_items"] == 3 and result["difference_b_minus_a"]["mean"] == pytest.approx(2 / 3)
    assert result["mcnemar"]["only_b"] == 2
    continuous = paired_comparison({"x": 0.2, "y": 0.4}, {"x": 0.3, "y": 0.7})
    assert "mcnemar" not in continuous and continuous["difference_b_minus_a"]["mean"] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="only in a"):
        paired_comparison({"x": 1, "w": 0}, {"x": 1})


def test_seeded_subsample_is_deterministic_nested_and_ordered():
    ids = [f"item{i}" for i in range(50)]
    small, large = seeded_subsample(ids, 10, seed=0), seeded_subsample(ids, 20, seed=0)
    assert small == seeded_subsample(ids, 10, seed=0) and len(small) == 10
    assert set(small) <= set(large)
    assert small == sorted(small, key=ids.index)
    assert seeded_subsample(ids, 10, seed=1) != small
    assert seeded_subsample(ids, None, seed=0) == ids and seeded_subsample(ids, 500, seed=0) == ids
