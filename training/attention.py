"""Does the model attend to the events that caused the next one? (synthetic data, planted causes)

For every validation/test case whose target event has a planted cause inside the input window:

- *planted hit rate*: how often the explanation (the final position's attention, averaged over
  blocks by default: ``ModelConfig.explain``) peaks on a planted cause, and the last block's
  attention alone, against the rate of a uniformly random pick among the window's events;
- *faithfulness*: the drop of the top recommendation's score when the top-attended event is
  removed from the input, against removing a random event (seeded).

Run it end to end (generate, train with the data defaults, evaluate, analyse):

    python -m attnrec.training.attention --users 1000 --items 500 --events 60000 --seed 7 --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .data import Dataset, dataset_from_events
from .evaluate import PROTOCOL, evaluate, model_scorer, popularity_scorer
from .features import left_pad
from .model import AttnRec

__all__ = ["attention_report", "deletion_check", "attention_mass", "noise_attention", "planted_data", "synthetic_benchmark"]

log = logging.getLogger(__name__)


def _window(ds: Dataset, u: int, cut: int, L: int) -> tuple[list[int], list[int], list[int], list[str | None]]:
    s = ds.users[u]
    lo = max(0, cut - L)
    ids = s.event_ids[lo:cut] if s.event_ids is not None else [None] * (cut - lo)
    return (s.items[lo:cut], (s.types or [0] * len(s.items))[lo:cut], (s.gaps or [0] * len(s.items))[lo:cut], list(ids))


def _tensors(rows: list[tuple[list[int], ...]], L: int) -> tuple[torch.Tensor, ...]:
    return tuple(torch.tensor([left_pad(r[j], L) for r in rows], dtype=torch.long) for j in range(3))


@torch.no_grad()
def attention_report(model: AttnRec, ds: Dataset, causes: dict[str, tuple[str, ...]], seed: int = 0,
                     batch_size: int = 256) -> dict[str, Any]:
    """Planted-hit rate and faithfulness over the val+test cases with a planted cause in the
    attention window (the newest ``max_len`` events; the model reads its ``history_len``)."""
    L, W = model.cfg.history_len, model.cfg.max_len
    model.eval()
    rng = np.random.default_rng(seed)
    cases, splits = [], []
    for split, (u, cut) in [*(("val", c) for c in ds.val), *(("test", c) for c in ds.test)]:
        s = ds.users[u]
        target_id = s.event_ids[cut] if s.event_ids else None
        planted = set(causes.get(target_id, ())) if target_id else set()
        items, types, gaps, ids = _window(ds, u, cut, L)
        if planted & set(ids[-W:]):
            cases.append((u, cut, items, types, gaps, ids, planted))
            splits.append(split)
    if not cases:
        return {"cases": 0}
    hits: list[bool] = []
    last_block_hits: list[bool] = []
    rand_rate: list[float] = []
    last_hits: list[bool] = []
    drop_top: list[float] = []
    drop_rand: list[float] = []
    flip_top: list[bool] = []
    flip_rand: list[bool] = []
    for b0 in range(0, len(cases), batch_size):
        batch = cases[b0 : b0 + batch_size]
        it, ty, ga = _tensors([(c[2], c[3], c[4]) for c in batch], L)
        h, att = model.final_state(it, ty, ga)  # (B, d), (B, L): the explanation `because` shows
        blocks: list[torch.Tensor] = []
        model(it, ty, ga, attentions=blocks)  # each block's attention (B, T, T), heads averaged
        last = blocks[-1][:, -1, -att.shape[1]:]  # (B, W): the last block's alone ("last-block")
        scores = model.item_scores(h)  # (B, n_items)
        scores[:, :2] = -math.inf
        for r, c in enumerate(batch):
            scores[r, torch.tensor(ds.users[c[0]].items[: c[1]])] = -math.inf
        best = scores.argmax(1)  # (B,) top recommendation
        s0 = scores.gather(1, best.unsqueeze(1))[:, 0]
        removed_top: list[tuple[list[int], ...]] = []
        removed_rand: list[tuple[list[int], ...]] = []
        for r, c in enumerate(batch):
            n = len(c[2])
            nw = min(n, att.shape[1])  # events in the attention window
            window = c[5][n - nw :]
            top = n - nw + int(att[r, att.shape[1] - nw :].argmax()) if n else 0  # index into the case's events
            hits.append(c[5][top] in c[6])
            last_block_hits.append(c[5][n - nw + int(last[r, last.shape[1] - nw :].argmax())] in c[6] if n else False)
            last_hits.append(c[5][-1] in c[6])
            rand_rate.append(len(c[6] & set(window)) / nw)
            rnd = n - nw + int(rng.integers(nw))
            for pos, out in ((top, removed_top), (rnd, removed_rand)):
                out.append(tuple([x[:pos] + x[pos + 1 :] for x in (c[2], c[3], c[4])]))
        for rows, drops, flips in ((removed_top, drop_top, flip_top), (removed_rand, drop_rand, flip_rand)):
            i2, t2, g2 = _tensors(rows, L)
            h2, _ = model.final_state(i2, t2, g2)
            sc2 = model.item_scores(h2)
            drops.extend((s0 - sc2.gather(1, best.unsqueeze(1))[:, 0]).tolist())
            sc2[:, :2] = -math.inf
            for r, c in enumerate(batch):
                sc2[r, torch.tensor(ds.users[c[0]].items[: c[1]])] = -math.inf
            flips.extend((sc2.argmax(1) != best).tolist())
    return {
        "cases": len(cases), "explain": model.cfg.explain,
        "top_attended_is_planted": float(np.mean(hits)), "top_attended_hits": int(np.sum(hits)),
        "last_block_top_is_planted": float(np.mean(last_block_hits)), "last_block_top_hits": int(np.sum(last_block_hits)),
        "random_pick_is_planted": float(np.mean(rand_rate)),
        "newest_event_is_planted": float(np.mean(last_hits)),
        "score_drop_remove_top_attended": {"mean": float(np.mean(drop_top)), "median": float(np.median(drop_top))},
        "score_drop_remove_random": {"mean": float(np.mean(drop_rand)), "median": float(np.median(drop_rand))},
        "top1_changed_remove_top_attended": float(np.mean(flip_top)),
        "top1_changed_remove_random": float(np.mean(flip_rand)),
        "by_split": _hit_intervals(np.asarray(hits, float), np.asarray(last_block_hits, float), np.asarray(splits)),
    }


def _hit_intervals(hits: np.ndarray, last: np.ndarray, splits: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """Per split (one case per user): the explanation's and the last block's planted-hit rates
    with 95 % bootstrap intervals over users, and their paired difference."""
    from .stats import bootstrap_interval, compare

    out = {}
    for split in ("val", "test"):
        a, b = hits[splits == split], last[splits == split]
        if len(a):
            out[split] = {"cases": len(a), "explanation": [float(a.mean()), *bootstrap_interval(a, seed=seed)],
                          "last_block": [float(b.mean()), *bootstrap_interval(b, seed=seed)],
                          "explanation_minus_last_block": compare(a, b, seed=seed)}
    return out


@torch.no_grad()
def deletion_check(model: AttnRec, ds: Dataset, split: str = "test", *, max_cases: int = 0, seed: int = 0,
                   batch_size: int = 256, past_only: bool = False) -> dict[str, Any]:
    """Is the explanation faithful on real data? For each case of ``split`` with at least two
    events in the explanation's window: the top-1 recommendation (PAD, OOV and the history
    excluded) and how much its score drops when the top-explained event is removed from the
    input, against removing a uniformly random event of the window (seeded) and the newest
    event. ``factor`` = mean drop (top-explained) / mean drop (random), with its 95 %
    bootstrap interval over cases (meaningful only when the random drop is clearly above 0);
    ``difference`` = the paired difference of the two drops with its interval, and ``passes``
    when that interval lies above 0 (removing the explained event lowers the score more than
    removing a random one). ``max_cases`` > 0 takes a seeded sample of the cases. ``past_only``:
    the newest event (the trigger, which also reaches the score outside attention, through the
    residual) is left out of the top-explained and the random pick; cases need two earlier events."""
    from .stats import bootstrap_interval, compare, ratio_interval

    L = model.cfg.history_len
    rng = np.random.default_rng(seed)
    cases = [(u, cut) for u, cut in ds.split(split) if cut >= 2 + past_only]
    past = int(past_only)  # window positions at the end left out of both picks
    if max_cases and len(cases) > max_cases:
        cases = [cases[i] for i in np.sort(rng.choice(len(cases), size=max_cases, replace=False))]
    drops: dict[str, list[float]] = {"top": [], "random": [], "newest": []}
    flips: dict[str, list[bool]] = {"top": [], "random": [], "newest": []}
    windows: list[int] = []
    for b0 in range(0, len(cases), batch_size):
        batch = cases[b0 : b0 + batch_size]
        rows = [_window(ds, u, cut, L)[:3] for u, cut in batch]
        h, att = model.final_state(*_tensors(rows, L))  # (B, d), (B, W)
        scores = _masked(model.item_scores(h), ds, batch)
        best = scores.argmax(1)  # (B,)
        s0 = scores.gather(1, best.unsqueeze(1))[:, 0]
        removed: dict[str, list[tuple[list[int], ...]]] = {k: [] for k in drops}
        for r, row in enumerate(rows):
            n = len(row[0])
            nw = min(n, att.shape[1])  # events in the explanation's window
            windows.append(nw)
            picks = {"top": n - nw + int(att[r, att.shape[1] - nw : att.shape[1] - past].argmax()),
                     "random": n - nw + int(rng.integers(nw - past)), "newest": n - 1}
            for k, pos in picks.items():
                removed[k].append(tuple([x[:pos] + x[pos + 1 :] for x in row]))
        for k, rws in removed.items():
            h2, _ = model.final_state(*_tensors(rws, L))
            sc2 = _masked(model.item_scores(h2), ds, batch)
            drops[k].extend((s0 - sc2.gather(1, best.unsqueeze(1))[:, 0]).tolist())
            flips[k].extend((sc2.argmax(1) != best).tolist())
    if not cases:
        return {"cases": 0}
    top, rnd = np.asarray(drops["top"]), np.asarray(drops["random"])
    lo, hi = ratio_interval(top, rnd, seed=seed)
    diff = compare(top, rnd, seed=seed)
    return {"split": split, "explain": model.cfg.explain, "past_only": past_only, "cases": len(cases), "mean_window": round(float(np.mean(windows)), 2),
            "factor": round(float(top.mean() / rnd.mean()), 3) if rnd.mean() else None,
            "factor_interval": [round(lo, 3), round(hi, 3)],
            "difference": {"top_minus_random": diff["diff"], "interval": diff["interval"]},
            "passes": diff["verdict"] == "a ahead",
            "score_drop": {k: {"mean": round(float(np.mean(v)), 4), "median": round(float(np.median(v)), 4),
                               "interval": [round(x, 4) for x in bootstrap_interval(v, seed=seed)]}
                           for k, v in drops.items()},
            "top1_changed": {k: round(float(np.mean(v)), 4) for k, v in flips.items()}}


def _masked(scores: torch.Tensor, ds: Dataset, batch: list[tuple[int, int]]) -> torch.Tensor:
    """Scores with PAD, OOV and each case's history at -inf (the evaluation's exclusions)."""
    scores = scores.clone()
    scores[:, :2] = -math.inf
    for r, (u, cut) in enumerate(batch):
        scores[r, torch.tensor(ds.users[u].items[:cut])] = -math.inf
    return scores


def attention_mass(att: np.ndarray, injected: np.ndarray, valid: np.ndarray) -> dict[str, Any]:
    """Share of attention on injected events against their share of the window.

    ``att`` (B, W): each case's last-layer attention from the final position over its window
    (heads averaged, rows sum to 1 over events); ``injected`` / ``valid`` (B, W) bool: injected
    events / real events (not padding). Returns the mean over cases with at least one event of
    the attention mass on injected events and of the injected events' share of the window's
    events (uniform attention would make the two equal)."""
    att, injected, valid = np.asarray(att, dtype=np.float64), np.asarray(injected, bool), np.asarray(valid, bool)
    n = valid.sum(1)
    rows = n > 0
    if not rows.any():
        return {"mass_on_injected": 0.0, "share_of_window": 0.0, "cases": 0}
    mass = (att * (injected & valid)).sum(1)[rows]
    share = (injected & valid).sum(1)[rows] / n[rows]
    return {"mass_on_injected": float(mass.mean()), "share_of_window": float(share.mean()), "cases": int(rows.sum())}


@torch.no_grad()
def noise_attention(model: AttnRec, ds: Dataset, injected: Any, split: str = "test",
                    batch_size: int = 256) -> dict[str, Any]:
    """:func:`attention_mass` of ``model`` on every case of ``split`` of a noisy dataset
    (``injected``: the :class:`attnrec.training.noise.NoiseInfo` that made it)."""
    from .evaluate import case_tensors
    from .noise import injected_mask

    cases = list(ds.split(split))
    atts, injs, valids = [], [], []
    model.eval()
    for b0 in range(0, len(cases), batch_size):
        batch = cases[b0 : b0 + batch_size]
        items, types, gaps = case_tensors(ds, batch, model.cfg.history_len)
        _, att = model.final_state(items, types, gaps)  # (B, W)
        W = att.shape[1]
        atts.append(att.numpy())
        valids.append((items[:, -W:] != 0).numpy())
        injs.append(injected_mask(injected, batch, W))
    out = attention_mass(np.concatenate(atts), np.concatenate(injs), np.concatenate(valids))
    out["ratio"] = round(out["mass_on_injected"] / out["share_of_window"], 4) if out["share_of_window"] else None
    out["split"] = split
    return out


def planted_data(n_users: int, n_items: int, n_events: int, seed: int) -> tuple[Dataset, dict[str, tuple[str, ...]]]:
    """The synthetic events with planted causes (the same for the same arguments) and the
    causes of each event that has one (event id -> cause event ids)."""
    from .sim.synth import generate_planted

    events, causes = [], {}
    for ev, c in generate_planted(n_users, n_items, n_events, seed=seed):
        events.append(ev)
        if c:
            causes[ev.event_id] = c
    return dataset_from_events(events, f"synth-u{n_users}-i{n_items}-e{n_events}-s{seed}"), causes


def synthetic_benchmark(n_users: int, n_items: int, n_events: int, seed: int, threads: int = 2,
                        progress: bool = False, max_minutes: float = 0.0, *, max_cpu_minutes: float = 0.0,
                        epochs: int | None = None, save: str | None = None, model_dir: str | None = None
                        ) -> dict[str, Any]:
    """Generate synthetic events, train with the data defaults (or load ``model_dir``, a
    checkpoint of the same data), compare with popularity, analyse attention; ``save`` writes
    the trained checkpoint there."""
    from .checkpoint import load_checkpoint, save_checkpoint
    from .defaults import default_configs
    from .train import fit_and_evaluate

    torch.set_num_threads(threads)
    t0 = time.monotonic()
    ds, causes = planted_data(n_users, n_items, n_events, seed)
    gen_s = time.monotonic() - t0
    if model_dir is not None:
        model, config, _ = load_checkpoint(model_dir)
        mcfg, tcfg = model.cfg, None
        info = json.loads((Path(model_dir) / "metrics.json").read_text())
    else:
        mcfg, tcfg = default_configs(ds)
        tcfg.seed, tcfg.threads, tcfg.max_minutes, tcfg.max_cpu_minutes = seed, threads, max_minutes, max_cpu_minutes
        if epochs is not None:
            tcfg.epochs = epochs
        model, info = fit_and_evaluate(ds, mcfg, tcfg, progress=progress)
        if save is not None:
            save_checkpoint(save, model, tcfg, ds, info)
    test = evaluate(model_scorer(model), ds, "test", mcfg.history_len)
    pop = evaluate(popularity_scorer(ds), ds, "test", mcfg.history_len)
    keys = ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10")
    return {
        "dataset": ds.name, "protocol": PROTOCOL, "seed": seed, "generate_seconds": round(gen_s, 2),
        "data": ds.stats(), "model": mcfg.to_dict(), "train_seconds": info["train_seconds"],
        "train_cpu_seconds": info.get("train_cpu_seconds"), "checkpoint": model_dir or save,
        "best_epoch": info["best_epoch"], "epochs_run": info["epochs_run"], "stop_reason": info["stop_reason"],
        "train": tcfg.to_dict() if tcfg is not None else None, "test": {k: test[k] for k in keys},
        "val_ndcg@10": info["val"]["ndcg@10"], "popular_test": {k: pop[k] for k in keys},
        "attention": attention_report(model, ds, causes, seed=seed),
    }


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=1000)
    p.add_argument("--items", type=int, default=500)
    p.add_argument("--events", type=int, default=60_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-minutes", type=float, default=0.0, help="wall-clock training budget (0 = none)")
    p.add_argument("--max-cpu-minutes", type=float, default=0.0, help="CPU-time training budget (0 = none)")
    p.add_argument("--epochs", type=int, default=None, help="at most this many epochs (default: the data defaults')")
    p.add_argument("--save", default=None, help="write the trained checkpoint to this directory")
    p.add_argument("--model", default=None, help="analyse this checkpoint (trained on the same arguments) instead")
    p.add_argument("--json", default="-")
    a = p.parse_args(argv)
    res = synthetic_benchmark(a.users, a.items, a.events, a.seed, a.threads, progress=True, max_minutes=a.max_minutes,
                              max_cpu_minutes=a.max_cpu_minutes, epochs=a.epochs, save=a.save, model_dir=a.model)
    text = json.dumps(res, indent=1)
    if a.json != "-":
        with open(a.json, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
