"""The parity gate (torch eager vs onnxruntime, on real and random batches) and the golden
input a published version carries for its load-time check.

Publish only within ``PARITY_MAX_ABS_DIFF`` (every finite score, the top-K scores and the
attention weights) and ``PARITY_MIN_TOP10_AGREEMENT`` (rows whose top-10 lists agree position
by position up to ties).
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
from .graph import ServingGraph
from .samples import input_len, pad_batch, random_seqs

__all__ = ["PARITY_MAX_ABS_DIFF", "PARITY_MIN_TOP10_AGREEMENT", "TIE_TOLERANCE", "top_agreement", "parity_check", "make_golden"]

log = logging.getLogger(__name__)

PARITY_MAX_ABS_DIFF = 1e-4
PARITY_MIN_TOP10_AGREEMENT = 0.999
PARITY_BATCHES = (1, 7, 64)


def _parity_cases(ckpt: Checkpoint, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Real and random batches of 1, 7 and 64 rows at lengths 1, short and the full input
    (max_len; an incremental model's history)."""
    cfg = ckpt.model_config
    max_len = input_len(cfg)
    rng = np.random.default_rng(seed)
    lengths = sorted({1, min(10, max_len), max_len})
    cases = []
    for source in ("real", "random"):
        if source == "real" and not ckpt.samples:
            log.warning("checkpoint has no samples.json sequences: parity on random sequences only")
            continue
        for b in PARITY_BATCHES:
            for length in lengths:
                if source == "real":
                    idx = rng.integers(0, len(ckpt.samples), size=b)
                    seqs = [ckpt.samples[i] for i in idx]
                else:
                    seqs = random_seqs(rng, b, length, cfg)
                cases.append((f"{source} B={b} L={length}", pad_batch(seqs, length)))
    # exclusion width different from the sequence length (E != L), with duplicates and PAD
    batch = pad_batch(random_seqs(rng, 7, max_len, cfg), max_len)
    batch["exclude"] = rng.integers(0, cfg["n_items"], size=(7, max_len + 13)).astype(np.int64)
    cases.append((f"random B=7 L={max_len} E={max_len + 13}", batch))
    return cases


#: Two items whose torch scores differ by at most this are a tie: either order is correct.
TIE_TOLERANCE = 1e-5


def top_agreement(t_scores: np.ndarray, t_items: np.ndarray, t_top: np.ndarray, o_items: np.ndarray) -> np.ndarray:
    """Per row: the ONNX top-10 equals torch's, position by position, up to ties.

    Position j agrees when the items are equal, or when torch scores ONNX's item within
    TIE_TOLERANCE of its own j-th score (near-equal scores may come out in either order).
    Positions where torch has no eligible item left (score -inf) are not compared.
    """
    rows = np.arange(len(t_items))[:, None]
    same = t_items == o_items
    with np.errstate(invalid="ignore"):  # -inf - -inf where no eligible item is left
        tie = np.abs(t_scores[rows, o_items] - t_top) <= TIE_TOLERANCE
    tie &= np.isfinite(t_top)
    ok = same | tie | ~np.isfinite(t_top)
    return ok.all(axis=1)


def parity_check(ckpt: Checkpoint, serving_onnx: Path, full_onnx: Path, *, top_k: int,
                 seed: int = 0) -> dict[str, Any]:
    """torch eager vs onnxruntime on real and random batches; returns the parity report.

    ``max_abs_diff`` is over every finite item score (full-score graph), the top-K scores
    and the attention weights; ``top10_agreement`` is the share of rows whose top-10 lists
    (serving graph vs torch) agree position by position up to ties (see top_agreement);
    ``top10_exact_agreement`` counts identical lists only, for the record.
    """
    serve = make_session(serving_onnx)
    full = make_session(full_onnx)
    graph = ServingGraph(ckpt.model, top_k, full_scores=True).eval()
    k10 = min(10, top_k)
    rows = agree = exact = 0
    worst = 0.0
    cases = []
    for name, batch in _parity_cases(ckpt, seed):
        with torch.no_grad():
            t_scores, t_attn = graph(*(torch.from_numpy(batch[k]) for k in ("items", "types", "gaps", "exclude")))[:2]
            t_top_scores, t_top_items = torch.topk(t_scores, top_k, dim=1)
        t_scores, t_attn = t_scores.numpy(), t_attn.numpy()
        o_scores, o_attn = full.run(None, batch)[:2]
        o_items, o_top_scores, o_attn2 = serve.run(None, batch)[:3]
        finite = np.isfinite(t_scores)
        if not np.array_equal(finite, np.isfinite(o_scores)):
            diff = math.inf  # a score is NaN/inf on one side only
        elif not finite.any():
            diff = 0.0
        else:
            diff = float(np.abs(t_scores[finite] - o_scores[finite]).max())
        if not (np.isfinite(t_scores) | np.isneginf(t_scores)).all():
            diff = math.inf  # NaN or +inf scores: never publishable
        tt = t_top_scores.numpy()
        fin_top = np.isfinite(tt)
        top_diff = float(np.abs(tt[fin_top] - o_top_scores[fin_top]).max()) if fin_top.any() else 0.0
        attn_diff = float(max(np.abs(t_attn - o_attn).max(), np.abs(t_attn - o_attn2).max()))
        case_diff = max(diff, top_diff, attn_diff)
        if not np.isfinite(o_attn2).all() or not np.isfinite(t_attn).all():
            case_diff = math.inf
        ok_rows = top_agreement(t_scores, t_top_items.numpy()[:, :k10], tt[:, :k10], o_items[:, :k10])
        exact += int((t_top_items.numpy()[:, :k10] == o_items[:, :k10]).all(axis=1).sum())
        rows += len(ok_rows)
        agree += int(ok_rows.sum())
        worst = max(worst, case_diff)
        cases.append({"case": name, "rows": int(len(ok_rows)), "max_abs_diff": case_diff,
                      "top10_agreement": float(ok_rows.mean())})
    report: dict[str, Any] = {
        "max_abs_diff": worst,
        "top10_agreement": agree / rows if rows else 0.0,
        "top10_exact_agreement": exact / rows if rows else 0.0,
        "tie_tolerance": TIE_TOLERANCE,
        "rows": rows,
        "thresholds": {"max_abs_diff": PARITY_MAX_ABS_DIFF, "top10_agreement": PARITY_MIN_TOP10_AGREEMENT},
        "cases": cases,
    }
    report["passed"] = bool(worst <= PARITY_MAX_ABS_DIFF and report["top10_agreement"] >= PARITY_MIN_TOP10_AGREEMENT)
    return report


def make_golden(ckpt: Checkpoint, serving_onnx: Path) -> dict[str, Any]:
    """A two-row golden input (a real or random full-length sequence and a short one) with
    the serving graph's own output, for load-time checks."""
    cfg = ckpt.model_config
    max_len = input_len(cfg)
    rng = np.random.default_rng(12345)
    seqs = [ckpt.samples[0]] if ckpt.samples else random_seqs(rng, 1, max_len, cfg)
    short = dict(seqs[0])
    seqs.append({k: v[-3:] for k, v in short.items()})
    batch = pad_batch(seqs, max_len)
    # exclude each row's three newest items: exercises exclusion, leaves >= K eligible items
    batch["exclude"] = np.ascontiguousarray(batch["items"][:, -3:])
    top_items, top_scores = make_session(serving_onnx).run(None, batch)[:2]
    if not np.isfinite(top_scores).all():
        raise ModelError("the golden input gives non-finite top scores; refusing to publish")
    return {
        **{k: batch[k].tolist() for k in ("items", "types", "gaps", "exclude")},
        "top_items": top_items.tolist(),
        "top_scores": [[float(x) for x in row] for row in top_scores],
        "atol": 1e-3,
    }
