"""Figures of a prequential run (training/prequential.py): HR@10, NDCG@10 and MRR@20 from the
ranks, 95 % bootstrap intervals over users (sessions), paired differences against a reference
method, per period (day or hour), a markdown table and a plot.

A rank is 0-based within the method's top ``n`` (20); ``n`` means not in it. HR@10 = share of
pairs with rank < 10, NDCG@10 = mean of 1 / log2(rank + 2) over those, MRR@20 = mean of
1 / (rank + 1) over ranks < 20. The bootstrap is the evaluation's (training/stats.py,
:func:`~attnrec.training.stats.clustered_draws`): it resamples users (a user's pairs go together,
so a heavy user does not pass for many independent cases), ``resamples`` times with a fixed
seed; an interval is the 2.5th and 97.5th percentile. A difference whose interval holds 0 is
inside the noise.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["METRICS", "pair_values", "summarise", "per_period", "markdown_table", "plot"]

METRICS = ("hr@10", "ndcg@10", "mrr@20")


def pair_values(ranks: np.ndarray) -> dict[str, np.ndarray]:
    """Each metric's value per pair."""
    r = ranks.astype(np.float64)
    return {"hr@10": (r < 10).astype(np.float64), "ndcg@10": np.where(r < 10, 1.0 / np.log2(r + 2.0), 0.0),
            "mrr@20": np.where(r < 20, 1.0 / (r + 1.0), 0.0)}


def summarise(ranks: dict[str, np.ndarray], users: np.ndarray, *, reference: str | None = None,
              resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per method: each metric with its 95 % interval (``[value, low, high]``) and, against
    ``reference``, the paired difference (method - reference) with its interval. One set of
    user draws for every method and metric (:func:`attnrec.training.stats.clustered_draws`)."""
    from .stats import clustered_draws, percentile_interval

    names = list(ranks)
    n_users = len(np.unique(users))
    out: dict[str, Any] = {"pairs": int(len(users)), "users": int(n_users), "resamples": resamples, "methods": {}}
    cols = [(name, m) for name in names for m in METRICS]
    vals = {name: pair_values(ranks[name]) for name in names}
    table = np.stack([vals[name][m] for name, m in cols], axis=1) if cols else np.zeros((len(users), 0))
    draws = clustered_draws(table, users, resamples=resamples, seed=seed)
    boot = {c: draws[:, j] for j, c in enumerate(cols)}
    for name in names:
        row: dict[str, Any] = {}
        for m in METRICS:
            mean = float(vals[name][m].mean()) if len(ranks[name]) else 0.0
            lo, hi = percentile_interval(boot[name, m])
            row[m] = [round(mean, 5), round(lo, 5), round(hi, 5)]
        out["methods"][name] = row
    if reference is not None and reference in ranks:
        for name in names:
            if name == reference:
                continue
            d = {}
            for m in METRICS:
                point = out["methods"][name][m][0] - out["methods"][reference][m][0]
                lo, hi = percentile_interval(boot[name, m] - boot[reference, m])
                d[m] = [round(point, 5), round(lo, 5), round(hi, 5), "noise" if lo <= 0 <= hi else "significant"]
            out["methods"][name]["minus_" + reference] = d
    return out


def period_of(ts_ms: np.ndarray, unit: str) -> list[str]:
    """The UTC day (``2014-04-05``) or hour (``2017-11-26T01h``) of each time."""
    fmt = "%Y-%m-%d" if unit == "day" else "%Y-%m-%dT%Hh"
    return [dt.datetime.fromtimestamp(int(t) / 1000, dt.UTC).strftime(fmt) for t in ts_ms.tolist()]


def per_period(ranks: dict[str, np.ndarray], periods: Sequence[str]) -> dict[str, Any]:
    """Each metric per method per period: ``{period: {"pairs": n, method: {metric: value}}}``."""
    labels = np.asarray(periods)
    out: dict[str, Any] = {}
    for p in sorted(set(periods)):
        sel = labels == p
        row: dict[str, Any] = {"pairs": int(sel.sum())}
        for name, r in ranks.items():
            vals = pair_values(r[sel])
            row[name] = {m: round(float(v.mean()), 5) for m, v in vals.items()}
        out[p] = row
    return out


def _cell(v: list[Any]) -> str:
    return f"{v[0]:.4f} ({v[1]:.4f}–{v[2]:.4f})"


def markdown_table(summary: dict[str, Any], reference: str | None = None) -> str:
    """Methods as rows: each metric with its interval, and the difference from ``reference``."""
    head = "| method | HR@10 | NDCG@10 | MRR@20 |" + (f" HR@10 − {reference} | MRR@20 − {reference} |" if reference else "")
    sep = "| --- " * (4 + (2 if reference else 0)) + "|"
    lines = [head, sep]
    for name, row in summary["methods"].items():
        cells = [name, *(_cell(row[m]) for m in METRICS)]
        if reference:
            d = row.get("minus_" + reference)
            for m in ("hr@10", "mrr@20"):
                cells.append("–" if d is None else f"{d[m][0]:+.4f} ({d[m][1]:+.4f}–{d[m][2]:+.4f}){'' if d[m][3] == 'significant' else ', noise'}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path, title: str, policy: str) -> None:
    """HR@10 and MRR@20 per period of each method (``result``: the run's JSON)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    periods = result["per_period"][policy]
    labels = list(periods)
    methods = [m for m in result["methods"] if all(m in periods[p] for p in labels)]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for ax, metric in zip(axes, ("hr@10", "mrr@20"), strict=True):
        for m in methods:
            ax.plot(range(len(labels)), [periods[p][m][metric] for p in labels], marker="o", ms=3, label=m)
        ax.set_xticks(range(len(labels)))
        ax.set_xticklabels(labels, rotation=45, ha="right", fontsize=7)
        ax.set_title(f"{metric.upper()} per period ({policy})", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
