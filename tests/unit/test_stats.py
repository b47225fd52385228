"""The bootstrap intervals and comparisons of training/stats.py."""

from __future__ import annotations

import numpy as np
import pytest
from attnrec.training.evaluate import rank_metrics
from attnrec.training.stats import (
    bootstrap_interval,
    bound_interval,
    compare,
    intervals,
    mean_over_seeds,
    per_user_values,
)


def test_per_user_values_average_to_the_reported_metrics() -> None:
    ranks = [0, 3, 9, 10, 19, 25, 2, 0]
    per_user = per_user_values(ranks)
    means = {k: float(v.mean()) for k, v in per_user.items()}
    assert means == pytest.approx(rank_metrics(ranks))
    assert per_user["hr@10"].tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert per_user["ndcg@10"][1] == pytest.approx(1 / np.log2(5))


def test_interval_covers_the_true_mean_about_95_percent_of_the_time() -> None:
    """A known case: samples of 400 users with a 0/1 hit of probability 0.1 (HR@10 = 0.1); the
    95 % interval of each sample should hold 0.1 in roughly 95 % of 300 samples."""
    rng = np.random.default_rng(1)
    covered = 0
    widths = []
    for rep in range(300):
        hits = (rng.random(400) < 0.1).astype(float)
        lo, hi = bootstrap_interval(hits, resamples=400, seed=rep)
        covered += lo <= 0.1 <= hi
        widths.append(hi - lo)
    assert 0.90 <= covered / 300 <= 0.99, covered
    # the binomial standard error: 2 * 1.96 * sqrt(0.1 * 0.9 / 400) = 0.0588
    assert np.mean(widths) == pytest.approx(0.0588, rel=0.1)


def test_interval_is_seeded() -> None:
    v = np.random.default_rng(0).random(1000)
    assert bootstrap_interval(v, seed=5) == bootstrap_interval(v, seed=5)
    assert bootstrap_interval(v, seed=5) != bootstrap_interval(v, seed=6)
    assert intervals({"x": v}, seed=3) == intervals({"x": v}, seed=3)
    assert compare(v, v[::-1], seed=2) == compare(v, v[::-1], seed=2)


def test_paired_comparison_sees_a_small_consistent_gain_the_unpaired_one_calls_a_tie() -> None:
    """Two models on the same 2,000 users: b = a plus a small gain on a few users. Users differ
    far more among themselves than the models differ, so only the paired interval excludes 0."""
    rng = np.random.default_rng(7)
    a = (rng.random(2000) < 0.3).astype(float)
    b = a.copy()
    gain = rng.choice(np.flatnonzero(a == 0), size=40, replace=False)
    b[gain] = 1.0  # b hits 40 more users: +0.02
    paired = compare(b, a, seed=0)
    unpaired = compare(b, a, paired=False, seed=0)
    assert paired["diff"] == pytest.approx(0.02)
    assert paired["verdict"] == "a ahead" and paired["interval"][0] > 0
    assert unpaired["verdict"] == "tie" and unpaired["interval"][0] < 0 < unpaired["interval"][1]
    width = lambda r: r["interval"][1] - r["interval"][0]  # noqa: E731
    assert width(paired) < width(unpaired) / 3
    assert compare(a, b, seed=0)["verdict"] == "b ahead"


def test_identical_models_tie() -> None:
    a = np.random.default_rng(3).random(500)
    res = compare(a, a + 0.0, seed=1)
    assert res["diff"] == 0 and res["interval"] == [0.0, 0.0] and res["verdict"] == "tie"


def test_intervals_of_several_metrics_hold_their_means() -> None:
    per_user = per_user_values(np.random.default_rng(4).integers(0, 60, size=3000))
    iv = intervals(per_user, seed=0)
    for m, v in per_user.items():
        assert iv[m][0] < v.mean() < iv[m][1]


def test_bound_interval_is_wider_than_the_bootstrap_for_ndcg_and_close_for_hr() -> None:
    per_user = per_user_values(np.random.default_rng(5).integers(0, 40, size=5000))
    for m, close in (("hr@10", True), ("ndcg@10", False)):
        v = per_user[m]
        lo, hi = bootstrap_interval(v, seed=0)
        blo, bhi = bound_interval(float(v.mean()), len(v))
        if close:
            assert (bhi - blo) == pytest.approx(hi - lo, rel=0.1)
        else:
            assert bhi - blo > 1.2 * (hi - lo)
        assert blo <= v.mean() <= bhi


def test_mean_over_seeds_is_per_user() -> None:
    out = mean_over_seeds([np.array([1.0, 0.0, 0.5]), np.array([0.0, 0.0, 1.0])])
    assert out.tolist() == [0.5, 0.0, 0.75]


def test_ratio_interval_holds_the_ratio_of_means_and_is_paired() -> None:
    from attnrec.training.stats import ratio_interval

    rng = np.random.default_rng(2)
    den = rng.exponential(1.0, size=2000)
    num = 3.0 * den + rng.normal(0, 0.1, size=2000)  # three times the other, case by case
    lo, hi = ratio_interval(num, den, seed=0)
    assert lo < num.mean() / den.mean() < hi and hi - lo < 0.05
    assert ratio_interval(num, den, seed=0) == (lo, hi)


def test_clustered_draws_take_a_clusters_cases_together_and_reduce_to_the_per_user_bootstrap() -> None:
    from attnrec.training.stats import _resampled_means, clustered_draws

    # user a: three cases, all hits; user b: one case, a miss. A draw holds a's cases 0, 3 or 6 times
    v = np.array([[1.0], [1.0], [1.0], [0.0]])
    draws = clustered_draws(v, ["a", "a", "a", "b"], resamples=200, seed=1)[:, 0]
    assert set(np.round(draws, 6)) <= {0.0, 0.75, 1.0} and len(set(np.round(draws, 6))) == 3
    # one case per user: the same draws as the per-user bootstrap
    rng = np.random.default_rng(4)
    x = rng.random((300, 2))
    got = clustered_draws(x, np.arange(300), resamples=500, seed=9)
    assert np.allclose(got, _resampled_means(x, 500, np.random.default_rng(9)))
