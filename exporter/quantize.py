"""Dynamic int8 quantisation, accepted only where it pays here.

``export --quantize`` quantises the serving graph's MatMul weights (including the item
embedding matrix of the scoring MatMul) with onnxruntime's ``quantize_dynamic`` and keeps the
int8 model only when both hold on this machine:

- it is faster: median latency of a batch of 32 full-length rows, one intra-op thread,
  the deployed session options, int8 < fp32 (by at least ``MIN_SPEEDUP``);
- it keeps quality: NDCG@10 on the checkpoint's ``samples.json`` sequences (predict each
  sequence's last item from the ones before it, full ranking, input items excluded -- a
  proxy of the training protocol on the rows the checkpoint ships) loses < 1% relative.

Otherwise the fp32 model is published and the manifest's ``quantization`` block says why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MAX_REL_NDCG_LOSS", "MIN_SPEEDUP", "sample_ndcg", "median_latency_ms", "evaluate_quantization"]

log = logging.getLogger(__name__)

MAX_REL_NDCG_LOSS = 0.01
MIN_SPEEDUP = 1.05


def _loo_batch(samples: list[dict[str, list[int]]], max_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from exporter.export import _pad_batch

    usable = [s for s in samples if len(s["items"]) >= 2]
    inputs = [{k: v[:-1] for k, v in s.items()} for s in usable]
    targets = np.array([s["items"][-1] for s in usable], dtype=np.int64)
    return _pad_batch(inputs, max_len), targets


def sample_ndcg(session: Any, samples: list[dict[str, list[int]]], max_len: int, k: int = 10) -> float:
    """NDCG@k of next-item prediction on ``samples`` (top-K comes from the graph itself)."""
    batch, targets = _loo_batch(samples, max_len)
    if len(targets) == 0:
        return float("nan")
    total = 0.0
    for start in range(0, len(targets), 256):
        feed = {name: arr[start:start + 256] for name, arr in batch.items()}
        top_items = session.run(["top_items"], feed)[0][:, :k]
        hit = top_items == targets[start:start + 256, None]  # (b, k)
        ranks = np.argmax(hit, axis=1)
        total += float((hit.any(axis=1) / np.log2(ranks + 2)).sum())
    return total / len(targets)


def median_latency_ms(session: Any, batch: dict[str, np.ndarray], repeats: int = 30) -> float:
    session.run(None, batch)  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        session.run(None, batch)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def evaluate_quantization(ckpt: Any, fp32_path: Path, int8_path: Path, *, top_k: int) -> dict[str, Any]:
    """Compare fp32 and int8 graphs; returns the manifest's ``quantization`` figures."""
    from exporter.check import make_session
    from exporter.export import _pad_batch, _random_seqs

    max_len = int(ckpt.model_config["max_len"])
    fp32, int8 = make_session(fp32_path), make_session(int8_path)
    rng = np.random.default_rng(0)
    seqs = ckpt.samples[:32] if len(ckpt.samples) >= 32 else _random_seqs(rng, 32, max_len, ckpt.model_config)
    batch = _pad_batch(seqs, max_len)
    lat32, lat8 = median_latency_ms(fp32, batch), median_latency_ms(int8, batch)
    if ckpt.samples:
        n32, n8 = sample_ndcg(fp32, ckpt.samples, max_len), sample_ndcg(int8, ckpt.samples, max_len)
    else:
        n32 = n8 = float("nan")
    rel_loss = (n32 - n8) / n32 if n32 and n32 == n32 and n32 > 0 else float("nan")
    speedup = lat32 / lat8 if lat8 > 0 else 0.0
    if not ckpt.samples:
        accepted, reason = False, "no samples.json rows to measure NDCG@10 on; kept fp32"
    elif speedup < MIN_SPEEDUP:
        accepted, reason = False, f"int8 not faster here ({lat8:.2f} ms vs fp32 {lat32:.2f} ms at batch 32); kept fp32"
    elif not rel_loss == rel_loss or rel_loss >= MAX_REL_NDCG_LOSS:
        accepted, reason = False, (f"int8 NDCG@10 {n8:.4f} vs fp32 {n32:.4f} (relative loss {rel_loss:.2%} >= "
                                   f"{MAX_REL_NDCG_LOSS:.0%}); kept fp32")
    else:
        accepted, reason = True, (f"int8 {speedup:.2f}x faster ({lat8:.2f} vs {lat32:.2f} ms at batch 32), "
                                  f"NDCG@10 {n8:.4f} vs {n32:.4f}")
    return {
        "accepted": accepted,
        "reason": reason,
        "method": "onnxruntime quantize_dynamic, QInt8 weights",
        "latency_ms_b32_fp32": lat32,
        "latency_ms_b32_int8": lat8,
        "speedup": speedup,
        "sample_ndcg@10_fp32": None if n32 != n32 else n32,
        "sample_ndcg@10_int8": None if n8 != n8 else n8,
        "rel_ndcg_loss": None if rel_loss != rel_loss else rel_loss,
        "ndcg_rows": int(sum(1 for s in ckpt.samples if len(s["items"]) >= 2)),
    }
