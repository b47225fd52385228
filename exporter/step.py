"""The parity gate and the golden input of an incremental model's step graph.

Two questions, both on real and random sequences, for batches of 1, 7 and 64 rows:

1. Does onnxruntime's step graph compute what torch's ``AttnRec.step`` computes, from the
   cache torch's ``final_state`` returns for the events before? (every finite score, the top-K
   scores, the attention and the new keys and values within ``PARITY_MAX_ABS_DIFF``; the top-10
   lists agree up to ties)
2. Does serving incrementally give what serving from the whole history gives? The full graph
   (onnxruntime) on the events before the new one, then the step graph on the new one, against
   the full graph on all of them: the worker's cache path against its cold path.

Both must pass for a version to be published.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnrec.errors import ModelError
from attnrec.modelcheck import make_session

from .checkpoint import Checkpoint
from .graph import ServingGraph, StepGraph
from .parity import PARITY_BATCHES, PARITY_MAX_ABS_DIFF, PARITY_MIN_TOP10_AGREEMENT, top_agreement
from .samples import input_len, pad_batch, random_seqs

__all__ = ["step_cases", "step_parity", "make_golden_step"]

log = logging.getLogger(__name__)
_KEYS = ("items", "types", "gaps")


def step_cases(ckpt: Checkpoint, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray], dict[str, np.ndarray],
                                                           dict[str, np.ndarray]]]:  # fmt: skip
    """(name, the events before, the new event, all of them) batches: the full graph's inputs
    are left-padded to the model's history; ``exclude`` is every row's items, for all three."""
    cfg = ckpt.model_config
    H = input_len(cfg)
    rng = np.random.default_rng(seed)
    cases = []
    for source in ("real", "random"):
        pool = [s for s in ckpt.samples if len(s["items"]) >= 2] if source == "real" else []
        if source == "real" and not pool:
            continue
        for b in PARITY_BATCHES:
            if source == "real":
                seqs = [pool[i] for i in rng.integers(0, len(pool), size=b)]
            else:
                seqs = [s for s in random_seqs(rng, b * 2, H + 5, cfg) if len(s["items"]) >= 2][:b]
            whole = pad_batch(seqs, H)
            before = pad_batch([{k: s[k][:-1] for k in _KEYS} for s in seqs], H)
            new = {k: np.asarray([[s[k][-1]] for s in seqs], dtype=np.int64) for k in _KEYS}
            excl = pad_batch(seqs, H + 1)["items"]  # the new event's item too: as the worker excludes
            for batch in (whole, before, new):
                batch["exclude"] = excl
            cases.append((f"{source} B={len(seqs)}", before, new, whole))
    return cases


def step_parity(ckpt: Checkpoint, serving_onnx: Path, step_onnx: Path, step_full_onnx: Path, *, top_k: int,
                seed: int = 0) -> dict[str, Any]:  # fmt: skip
    """torch step vs onnxruntime step, and incremental vs whole-history serving (module docstring)."""
    serve, step, step_full = make_session(serving_onnx), make_session(step_onnx), make_session(step_full_onnx)
    t_full = ServingGraph(ckpt.model, top_k, full_scores=True).eval()
    t_step = StepGraph(ckpt.model, top_k, full_scores=True).eval()
    k10 = min(10, top_k)
    worst = worst_chain = 0.0
    rows = agree = agree_chain = 0
    cases = []
    for name, before, new, whole in step_cases(ckpt, seed):
        with torch.no_grad():
            _, _, cache, n = t_full(*(torch.from_numpy(before[k]) for k in (*_KEYS, "exclude")))
            t_scores, t_attn, t_kv = t_step(*(torch.from_numpy(new[k]) for k in _KEYS), cache, n,
                                            torch.from_numpy(new["exclude"]))
            t_top_scores, t_top_items = torch.topk(t_scores, top_k, dim=1)
        feed = {**{k: new[k] for k in _KEYS}, "cache": cache.numpy(), "cache_len": n.numpy(), "exclude": new["exclude"]}
        o_scores, o_attn, o_kv = step_full.run(None, feed)
        o_items, o_top, o_attn2, o_kv2 = step.run(None, feed)
        t_scores, tt = t_scores.numpy(), t_top_scores.numpy()
        finite = np.isfinite(t_scores)
        if np.array_equal(finite, np.isfinite(o_scores)):
            diff = float(np.abs(t_scores[finite] - o_scores[finite]).max(initial=0.0))
        else:  # a score is -inf (excluded) on one side only
            diff = math.inf
        fin_top = np.isfinite(tt)
        diff = max(diff, float(np.abs(tt[fin_top] - o_top[fin_top]).max(initial=0.0)),
                   float(np.abs(t_attn.numpy() - o_attn2).max()), float(np.abs(t_kv.numpy() - o_kv2).max()),
                   float(np.abs(t_kv.numpy() - o_kv).max()))
        ok = top_agreement(t_scores, t_top_items.numpy()[:, :k10], tt[:, :k10], o_items[:, :k10])
        # the worker's two paths, both in onnxruntime: cache + step against the whole history
        c, cn = serve.run(["cache", "cache_len"], {k: before[k] for k in (*_KEYS, "exclude")})
        s_items, s_top = step.run(None, {**feed, "cache": c, "cache_len": cn})[:2]
        f_items, f_top = serve.run(None, {k: whole[k] for k in (*_KEYS, "exclude")})[:2]
        fin = np.isfinite(f_top)
        chain = float(np.abs(f_top[fin] - s_top[fin]).max(initial=0.0))
        ok_chain = top_agreement(t_scores, f_items[:, :k10], f_top[:, :k10], s_items[:, :k10])
        worst, worst_chain = max(worst, diff), max(worst_chain, chain)
        rows += len(ok)
        agree += int(ok.sum())
        agree_chain += int(ok_chain.sum())
        cases.append({"case": name, "rows": len(ok), "max_abs_diff": diff, "top10_agreement": float(ok.mean()),
                      "step_vs_full_max_abs_diff": chain, "step_vs_full_top10_agreement": float(ok_chain.mean())})
    report: dict[str, Any] = {
        "max_abs_diff": worst, "top10_agreement": agree / rows if rows else 0.0, "rows": rows,
        "step_vs_full": {"max_abs_diff": worst_chain, "top10_agreement": agree_chain / rows if rows else 0.0},
        "thresholds": {"max_abs_diff": PARITY_MAX_ABS_DIFF, "top10_agreement": PARITY_MIN_TOP10_AGREEMENT},
        "cases": cases,
    }
    report["passed"] = bool(rows and worst <= PARITY_MAX_ABS_DIFF and worst_chain <= PARITY_MAX_ABS_DIFF
                            and report["top10_agreement"] >= PARITY_MIN_TOP10_AGREEMENT
                            and report["step_vs_full"]["top10_agreement"] >= PARITY_MIN_TOP10_AGREEMENT)
    return report


def make_golden_step(golden: dict[str, Any], serving_onnx: Path, step_onnx: Path, n_items: int) -> dict[str, Any]:
    """The step's golden block: one next event for each golden row (continuing from the cache
    the full graph returns for the golden input) and the step graph's own output."""
    rng = np.random.default_rng(54321)
    feed = {k: np.asarray(golden[k], dtype=np.int64) for k in (*_KEYS, "exclude")}
    B = feed["items"].shape[0]
    new = {"items": rng.integers(2, n_items, size=(B, 1)).astype(np.int64),
           "types": np.where(feed["types"][:, -1:] > 0, feed["types"][:, -1:], 0),
           "gaps": np.where(feed["gaps"][:, -1:] > 0, 1, 0).astype(np.int64),
           "exclude": feed["exclude"]}
    cache, cache_len = make_session(serving_onnx).run(["cache", "cache_len"], feed)
    top_items, top_scores = make_session(step_onnx).run(None, {**new, "cache": cache, "cache_len": cache_len})[:2]
    if not np.isfinite(top_scores).all():
        raise ModelError("the golden step gives non-finite top scores; refusing to publish")
    return {**{k: v.tolist() for k, v in new.items()}, "top_items": top_items.tolist(),
            "top_scores": [[float(x) for x in row] for row in top_scores], "atol": 1e-3}
