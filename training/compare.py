"""Paired comparisons of saved evaluation results (``attnrec eval --compare``).

A result is one model's per-user ranks of the targets of one split, from any of:

- a result JSON of ``attnrec eval --json FILE`` (its ``per_user``, ``split``, ``protocol``; a
  model trained there keeps both splits, ``all_splits``);
- a checkpoint directory of ``attnrec train`` or its ``per_user.json`` (``val`` and ``test``;
  the split is the command's ``--split``).

Several results joined by commas (``A1.json,A2.json,A3.json``: seeds of one recipe) are one
side: each user's values are averaged over them before the bootstrap, so the interval is that
of the mean over seeds (the users' sampling noise; the seeds' own spread is listed beside it).
Both sides must cover the same users of the same split under the same protocol; the
comparison is paired on the user ids (:func:`attnrec.training.stats.compare`).

    report = compare_files(["runs/a/s42,runs/a/s43"], ["gru.json"], split="val")
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnrec.errors import ConfigError

from .stats import LEVEL, RESAMPLES, compare, intervals, mean_over_seeds, per_user_values

__all__ = ["Result", "load_result", "compare_files", "compare_results", "KS"]

#: The cut-offs compared (HR@K and NDCG@K each).
KS = (10, 20)


@dataclass
class Result:
    """One model's per-user ranks on one split."""

    source: str
    split: str
    protocol: str | None
    dataset: str | None
    user_ids: list[str]
    ranks: list[int]


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: not a readable result file ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: not a result file (a JSON object expected)")
    return data


def load_result(spec: str, split: str) -> Result:
    """One result from a result JSON, a checkpoint directory or a ``per_user.json`` (module
    docstring); ``split`` picks a checkpoint's split and must match a result JSON's."""
    path = Path(spec)
    if path.is_dir():
        path = path / "per_user.json"
        if not path.is_file():
            raise ConfigError(f"{spec}: a checkpoint without per_user.json (trained before per-user results were "
                              "kept): evaluate it with attnrec eval --model ... --json FILE and compare that")
    data = _read(path)
    if split in data.get("all_splits", {}):  # a result JSON of a model trained by attnrec eval: both splits
        pu, protocol = data["all_splits"][split]["per_user"], data.get("protocol")
    elif "per_user" in data:  # a result JSON of attnrec eval
        if data.get("split") != split:
            raise ConfigError(f"{spec}: a result of split {data.get('split')!r}, not {split!r} (--split)")
        pu, protocol = data["per_user"], data.get("protocol")
    elif split in data and isinstance(data[split], dict):  # per_user.json of a checkpoint
        pu, protocol = data[split], data.get("protocol")
    else:
        raise ConfigError(f"{spec}: no per-user results of split {split!r} in it")
    if not isinstance(pu, dict) or len(pu.get("user_ids", ())) != len(pu.get("ranks", ())) or not pu.get("ranks"):
        raise ConfigError(f"{spec}: per-user results need user_ids and ranks of the same, non-zero length")
    return Result(str(spec), split, protocol, data.get("dataset"), [str(u) for u in pu["user_ids"]],
                  [int(r) for r in pu["ranks"]])


def _aligned(side: list[Result], users: list[str]) -> list[dict[str, np.ndarray]]:
    """Each result's per-user values in the order of ``users``."""
    out = []
    for r in side:
        pos = {u: i for i, u in enumerate(r.user_ids)}
        missing = [u for u in users if u not in pos]
        if missing or len(pos) != len(users):
            raise ConfigError(f"{r.source}: covers {len(pos)} users, the first result {len(users)}, "
                              f"{len(missing)} of them missing: compare results of the same users")
        ranks = np.asarray(r.ranks, dtype=np.int64)[[pos[u] for u in users]]
        out.append(per_user_values(ranks, KS))
    return out


def _side(results: list[Result], values: list[dict[str, np.ndarray]], seed: int) -> dict[str, Any]:
    mean = {m: mean_over_seeds([v[m] for v in values]) for m in values[0]}
    side: dict[str, Any] = {"results": [r.source for r in results],
                            "metrics": {m: round(float(v.mean()), 5) for m, v in mean.items()},
                            "intervals": intervals(mean, seed=seed)}
    if len(values) > 1:
        side["per_result"] = {m: [round(float(v[m].mean()), 5) for v in values] for m in mean}
    return side


def compare_results(a: list[Result], b: list[Result], seed: int = 0) -> dict[str, Any]:
    """The comparison report of side ``a`` against side ``b`` (lists of results, averaged per
    user within a side): each side's means and intervals, and for every metric the paired
    difference a - b with its interval and verdict ("a ahead", "b ahead", "tie")."""
    everything = [*a, *b]
    protocols = {r.protocol for r in everything}
    splits = {r.split for r in everything}
    if len(protocols) > 1 or len(splits) > 1:
        raise ConfigError("results of different protocols or splits cannot be paired: "
                          + "; ".join(f"{r.source}: {r.protocol}, {r.split}" for r in everything))
    users = a[0].user_ids
    va, vb = _aligned(a, users), _aligned(b, users)
    side_a, side_b = _side(a, va, seed), _side(b, vb, seed)
    mean_a = {m: mean_over_seeds([v[m] for v in va]) for m in va[0]}
    mean_b = {m: mean_over_seeds([v[m] for v in vb]) for m in vb[0]}
    return {"split": a[0].split, "protocol": a[0].protocol, "datasets": sorted({str(r.dataset) for r in everything}),
            "users": len(users), "resamples": RESAMPLES, "level": LEVEL, "seed": seed,
            "a": side_a, "b": side_b,
            "paired": {m: compare(mean_a[m], mean_b[m], seed=seed) for m in mean_a}}


def compare_files(a: list[str], b: list[str], split: str, seed: int = 0) -> dict[str, Any]:
    """:func:`compare_results` of files (each side: one or more result paths)."""
    return compare_results([load_result(x, split) for x in a], [load_result(x, split) for x in b], seed)


def parse_side(spec: str) -> list[str]:
    """``"A.json,B.json"`` -> ``["A.json", "B.json"]`` (one side of a comparison)."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise ConfigError(f"--compare {spec!r}: no result file named")
    return parts
