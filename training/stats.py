"""Intervals for the quality figures: a seeded bootstrap over users (pure numpy, no torch).

Every figure of the evaluation (:mod:`attnrec.training.evaluate`) is a mean over cases, one
case per user: HR@K is the mean of per-user hits (rank < K), NDCG@K the mean of per-user
``1/log2(rank + 2)`` on a hit, 0 otherwise. With a few hundred users such a mean moves by
several hundredths between samples of users, so a figure is reported with a 95 % percentile
bootstrap interval over users (:func:`bootstrap_interval`), and two models on the same users
are compared on the per-user difference (:func:`compare`, paired: users are resampled once
and both models keep their own value for each drawn user). A difference whose interval
contains 0 is a tie.

    ranks = evaluate(scorer, ds, "test", L, return_ranks=True)["ranks"]
    per_user = per_user_values(ranks)              # {"hr@10": (n,), "ndcg@10": (n,), ...}
    lo, hi = bootstrap_interval(per_user["ndcg@10"], seed=0)
    compare(a_values, b_values, seed=0)            # {"diff", "interval", "verdict", ...}

Without per-user values (a published figure, an old run), :func:`bound_interval` gives a
conservative interval from the mean and the number of users alone: a per-user value in [0, 1]
with mean m has a variance of at most m(1 - m), with equality for HR@K (a 0/1 value), so for
NDCG@K the bound is wider than the truth.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["RESAMPLES", "LEVEL", "SEED", "METHOD", "per_user_values", "bootstrap_interval", "compare", "bound_interval",
           "intervals", "mean_over_seeds", "ratio_interval", "clustered_draws", "percentile_interval"]

#: Bootstrap resamples of every reported interval.
RESAMPLES = 1000
#: Coverage of every reported interval.
LEVEL = 0.95
#: The seed of every reported interval and comparison.
SEED = 0
#: How the reported intervals are computed (the result JSON's ``interval_method``).
METHOD = {"method": "percentile bootstrap over users", "resamples": RESAMPLES, "level": LEVEL, "seed": SEED}
_CHUNK = 1 << 22  # indices drawn per block (memory stays ~32 MB whatever the number of users)


def per_user_values(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = (10, 20)) -> dict[str, np.ndarray]:
    """Per-user HR@K (0/1) and NDCG@K from 0-based ranks of the target (0 = top): the values
    whose means are :func:`attnrec.training.evaluate.rank_metrics`."""
    r = np.asarray(ranks, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = hit.astype(np.float64)
        out[f"ndcg@{k}"] = np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)
    return out


def _resampled_means(values: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Means of ``resamples`` bootstrap samples (users drawn with replacement) of each column of
    ``values`` (n, m) -> (resamples, m); the same draws for every column (paired)."""
    n = values.shape[0]
    per_block = max(1, _CHUNK // max(n, 1))
    out = []
    for start in range(0, resamples, per_block):
        idx = rng.integers(0, n, size=(min(per_block, resamples - start), n))  # (b, n)
        out.append(values[idx].mean(axis=1))  # (b, m)
    return np.concatenate(out)


def clustered_draws(values: np.ndarray, clusters: Sequence[Any] | np.ndarray, *, resamples: int = RESAMPLES,
                    seed: int = 0) -> np.ndarray:
    """Bootstrap means of per-case ``values`` (n, m) whose cases come in clusters (a user's or a
    session's several next events): each resample draws clusters with replacement and takes all
    their cases, so a heavy user does not pass for many independent cases; the mean is over the
    drawn cases. (resamples, m), the same draws for every column (paired). With one case per
    cluster this is :func:`bootstrap_interval`'s resampling."""
    v = np.asarray(values, dtype=np.float64)
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    k = int(codes.max()) + 1 if len(codes) else 0
    if not k:
        return np.zeros((resamples, v.shape[1]))
    rng = np.random.default_rng(seed)
    count = np.bincount(codes, minlength=k).astype(np.float64)
    sums = np.stack([np.bincount(codes, weights=v[:, j], minlength=k) for j in range(v.shape[1])], axis=1)  # (k, m)
    per_block = max(1, _CHUNK // k)
    out = []
    for start in range(0, resamples, per_block):
        b = min(per_block, resamples - start)
        idx = rng.integers(0, k, size=(b, k))
        w = np.stack([np.bincount(row, minlength=k) for row in idx]).astype(np.float64)  # (b, k) draws of each cluster
        out.append((w @ sums) / np.maximum(w @ count, 1)[:, None])
    return np.concatenate(out)


def percentile_interval(draws: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The percentile interval of bootstrap draws (1-D) at ``level``."""
    return _percentiles(draws, level)


def _percentiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    a = (1.0 - level) / 2.0
    lo, hi = np.quantile(draws, [a, 1.0 - a])
    return float(lo), float(hi)


def bootstrap_interval(values: Sequence[float] | np.ndarray, *, resamples: int = RESAMPLES, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-user ``values`` (seeded)."""
    v = np.asarray(values, dtype=np.float64)
    assert v.ndim == 1 and len(v) > 0, f"need a non-empty vector of per-user values, got shape {v.shape}"
    draws = _resampled_means(v[:, None], resamples, np.random.default_rng(seed))[:, 0]
    return _percentiles(draws, level)


def intervals(per_user: dict[str, np.ndarray], *, resamples: int = RESAMPLES, seed: int = 0,
              level: float = LEVEL) -> dict[str, list[float]]:
    """``{metric: [low, high]}`` for every per-user vector, from one set of user draws."""
    names = list(per_user)
    if not names:
        return {}
    table = np.stack([np.asarray(per_user[m], dtype=np.float64) for m in names], axis=1)  # (n, m)
    assert table.shape[0] > 0, "no users"
    draws = _resampled_means(table, resamples, np.random.default_rng(seed))
    return {m: [round(x, 5) for x in _percentiles(draws[:, j], level)] for j, m in enumerate(names)}


def compare(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray, *, paired: bool = True,
            resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> dict[str, Any]:
    """The difference of means ``mean(a) - mean(b)`` with its bootstrap interval.

    ``paired`` (the default): ``a`` and ``b`` are two models' values for the same users in the
    same order; each resample draws users and takes both models' values for them, so what the
    users have in common (an easy or a hard target) cancels. Unpaired: each side is resampled
    on its own (different users, or to show what pairing buys). ``verdict`` is "a ahead" or
    "b ahead" when the interval excludes 0, else "tie"; ``relative`` is the difference over
    ``mean(b)``."""
    va, vb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert len(va) and len(vb), "need per-user values on both sides"
    rng = np.random.default_rng(seed)
    if paired:
        assert va.shape == vb.shape, f"paired values need the same users: {va.shape} against {vb.shape}"
        draws = _resampled_means((va - vb)[:, None], resamples, rng)[:, 0]
    else:
        draws = (_resampled_means(va[:, None], resamples, rng)[:, 0]
                 - _resampled_means(vb[:, None], resamples, rng)[:, 0])
    lo, hi = _percentiles(draws, level)
    diff = float(va.mean() - vb.mean())
    verdict = "a ahead" if lo > 0 else "b ahead" if hi < 0 else "tie"
    mb = float(vb.mean())
    return {"a": round(float(va.mean()), 5), "b": round(mb, 5), "diff": round(diff, 5),
            "interval": [round(lo, 5), round(hi, 5)], "relative": round(diff / mb, 4) if mb else None,
            "verdict": verdict, "paired": paired, "users": [len(va), len(vb)] if not paired else len(va),
            "resamples": resamples, "seed": seed, "level": level}


def ratio_interval(num: Sequence[float] | np.ndarray, den: Sequence[float] | np.ndarray, *,
                   resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Bootstrap interval of ``mean(num) / mean(den)`` over cases (paired: each draw takes a
    case's two values together), e.g. how many times the score drops more when one event is
    removed than when another is."""
    a, b = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    assert a.shape == b.shape and a.ndim == 1 and len(a), "need two per-case vectors of one length"
    draws = _resampled_means(np.stack([a, b], axis=1), resamples, np.random.default_rng(seed))  # (R, 2)
    ok = draws[:, 1] != 0
    return _percentiles(draws[ok, 0] / draws[ok, 1], level)


def bound_interval(mean: float, n: int, level: float = LEVEL) -> tuple[float, float]:
    """A conservative interval of a mean of ``n`` per-user values in [0, 1] known only by its
    mean: normal, with the largest variance such values can have, m(1 - m). Exact in spirit
    for HR@K (Wald), wider than the truth for NDCG@K. For figures without per-user values."""
    assert n > 0 and 0.0 <= mean <= 1.0, f"need 0 <= mean <= 1 and n > 0, got {mean}, {n}"
    z = NormalDist().inv_cdf(0.5 + level / 2.0)
    half = z * math.sqrt(mean * (1.0 - mean) / n)
    return max(0.0, mean - half), min(1.0, mean + half)


def mean_over_seeds(runs: Sequence[np.ndarray]) -> np.ndarray:
    """Per-user values of several seeds' runs (same users, same order) averaged per user: the
    vector whose bootstrap interval goes with a mean over seeds (the users' sampling noise;
    the seeds' own spread is reported beside it)."""
    stack = np.stack([np.asarray(r, dtype=np.float64) for r in runs])
    return stack.mean(axis=0)  # (n,)
