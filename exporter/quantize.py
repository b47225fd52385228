"""Dynamic int8 quantisation, accepted only where it pays here.

``export --quantize`` quantises the serving graph's MatMul weights (including the item
embedding matrix of the scoring MatMul) with onnxruntime's ``quantize_dynamic`` and keeps the
int8 model only when both hold on this machine:

- it is faster: median latency of a batch of 32 full-length rows, one intra-op thread,
  the deployed session options, int8 < fp32 (by at least ``MIN_SPEEDUP``);
- it keeps quality: validation NDCG@10 loses < 1% relative. When the checkpoint's training
  data is still where ``config.json`` says (``data_files``, same fingerprint), this is the
  training package's own evaluation (leave-one-out, full ranking, input items excluded) run
  on the fp32 and int8 full-score graphs in onnxruntime. Otherwise a proxy on the
  checkpoint's ``samples.json`` rows (predict each row's last item from the ones before it),
  and the manifest says which (``ndcg_source``).

Two variants are tried: ``all`` (every MatMul with a constant weight, including the
scoring MatMul against the item table) and ``encoder`` (the transformer's MatMuls only; the
scoring MatMul stays fp32, because ranking 10^4+ items by int8 dot products is where the
precision goes). The fastest variant that passes both tests is published.

Otherwise the fp32 model is published and the manifest's ``quantization`` block says why.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from .samples import input_len, pad_batch, random_seqs

__all__ = ["MAX_REL_NDCG_LOSS", "MIN_SPEEDUP", "VARIANTS", "quantize_graph", "sample_ndcg", "median_latency_ms",
           "evaluate_quantization", "choose_quantization"]

log = logging.getLogger(__name__)

MAX_REL_NDCG_LOSS = 0.01
MIN_SPEEDUP = 1.05
VARIANTS = ("all", "encoder")


def _scoring_matmuls(path: Path) -> list[str]:
    """Names of MatMul nodes whose constant weight is the (d, n_items) item table."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    widest = max((d[-1] for d in inits.values() if len(d) == 2), default=0)
    return [n.name for n in model.graph.node
            if n.op_type == "MatMul" and any(len(inits.get(x, [])) == 2 and inits[x][-1] == widest for x in n.input)]


def quantize_graph(fp32_path: Path, out_path: Path, *, variant: str = "all") -> Path:
    """Dynamic int8 (QInt8 weights) of ``fp32_path``; ``encoder`` keeps the scoring MatMul fp32."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    assert variant in VARIANTS, f"variant must be one of {VARIANTS}, got {variant!r}"
    exclude = _scoring_matmuls(fp32_path) if variant == "encoder" else []
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs per-tensor chatter on the root logger
    try:
        quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8, nodes_to_exclude=exclude)
    finally:
        root.setLevel(level)
    return out_path


def _loo_batch(samples: list[dict[str, list[int]]], max_len: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    usable = [s for s in samples if len(s["items"]) >= 2]
    inputs = [{k: v[:-1] for k, v in s.items()} for s in usable]
    targets = np.array([s["items"][-1] for s in usable], dtype=np.int64)
    return pad_batch(inputs, max_len), targets


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


def _dataset_path(config: dict[str, Any]) -> Path | None:
    files = [Path(f) for f in config.get("data_files") or []]
    if not files or not all(f.exists() for f in files):
        return None
    fmt = config.get("format")
    if fmt == "gsasrec":
        return files[0].parent.parent
    if len(files) == 1:
        return files[0]
    parent = files[0].parent
    return parent if all(f.parent == parent for f in files) else None


def protocol_ndcg(ckpt: Any, full_fp32: Path, full_int8: Path) -> tuple[float, float, int] | None:
    """Validation NDCG@10 of the fp32 and int8 full-score graphs with training.evaluate, or
    None when the checkpoint's data is not available (or has changed since training)."""
    import torch

    from attnrec.modelcheck import make_session

    from ..training.data import Vocab, load_dataset
    from ..training.evaluate import evaluate

    path = _dataset_path(ckpt.config)
    if path is None:
        return None
    ds = load_dataset(path, ckpt.config.get("format", "events"), Vocab.from_dict(ckpt.vocab))
    if ckpt.config.get("data_fingerprint") and ds.fingerprint != ckpt.config["data_fingerprint"]:
        log.warning("training data at %s changed since training; using the samples.json proxy", path)
        return None
    max_len = input_len(ckpt.model_config)
    out = []
    for graph in (full_fp32, full_int8):
        sess = make_session(graph, intra_op_threads=2)

        def scorer(items: Any, types: Any, gaps: Any, s: Any = sess) -> Any:
            feed = {"items": items.numpy(), "types": types.numpy(), "gaps": gaps.numpy(),
                    "exclude": np.zeros((items.shape[0], 1), dtype=np.int64)}
            return torch.from_numpy(s.run(["scores"], feed)[0])

        res = evaluate(scorer, ds, "val", max_len)
        out.append(float(res["ndcg@10"]))
    return out[0], out[1], len(ds.val)


def evaluate_quantization(ckpt: Any, fp32_path: Path, int8_path: Path, *, variant: str = "all",
                          full_fp32: Path | None = None) -> dict[str, Any]:
    """Compare fp32 and int8 graphs; returns the manifest's ``quantization`` figures.

    ``full_fp32`` (the full-score graph) enables the protocol NDCG@10 comparison.
    """
    from attnrec.modelcheck import make_session
    max_len = input_len(ckpt.model_config)
    fp32, int8 = make_session(fp32_path), make_session(int8_path)
    rng = np.random.default_rng(0)
    seqs = ckpt.samples[:32] if len(ckpt.samples) >= 32 else random_seqs(rng, 32, max_len, ckpt.model_config)
    batch = pad_batch(seqs, max_len)
    lat32, lat8 = median_latency_ms(fp32, batch), median_latency_ms(int8, batch)
    proto = None
    if full_fp32 is not None:
        full_int8 = quantize_graph(full_fp32, full_fp32.with_name(f"{full_fp32.stem}.{variant}.int8.onnx"), variant=variant)
        proto = protocol_ndcg(ckpt, full_fp32, full_int8)
    if proto is not None:
        n32, n8, rows = proto
        source = "training.evaluate on the checkpoint's validation split (onnxruntime fp32 vs int8)"
    elif ckpt.samples:
        n32, n8 = sample_ndcg(fp32, ckpt.samples, max_len), sample_ndcg(int8, ckpt.samples, max_len)
        rows = int(sum(1 for s in ckpt.samples if len(s["items"]) >= 2))
        source = "proxy: next item of the checkpoint's samples.json rows"
    else:
        n32 = n8 = float("nan")
        rows, source = 0, "none"
    rel_loss = (n32 - n8) / n32 if n32 and n32 == n32 and n32 > 0 else float("nan")
    speedup = lat32 / lat8 if lat8 > 0 else 0.0
    if rows == 0:
        accepted, reason = False, "no data to measure NDCG@10 on; kept fp32"
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
        "variant": variant,
        "method": "onnxruntime quantize_dynamic, QInt8 weights"
                  + (", scoring MatMul kept fp32" if variant == "encoder" else ""),
        "latency_ms_b32_fp32": lat32,
        "latency_ms_b32_int8": lat8,
        "speedup": speedup,
        "ndcg@10_fp32": None if n32 != n32 else n32,
        "ndcg@10_int8": None if n8 != n8 else n8,
        "rel_ndcg_loss": None if rel_loss != rel_loss else rel_loss,
        "ndcg_rows": rows,
        "ndcg_source": source,
    }


def choose_quantization(ckpt: Any, serving: Path, full: Path, work: Path) -> tuple[Path | None, dict[str, Any]]:
    """Try every variant; returns (the fastest accepted int8 graph or None, the report)."""
    tried = []
    for variant in VARIANTS:
        qpath = quantize_graph(serving, work / f"model.{variant}.int8.onnx", variant=variant)
        tried.append((qpath, evaluate_quantization(ckpt, serving, qpath, variant=variant, full_fp32=full)))
    accepted = [t for t in tried if t[1]["accepted"]]
    if accepted:
        best_path, best = max(accepted, key=lambda t: t[1]["speedup"])
        return best_path, {**best, "variants": [r for _, r in tried]}
    reason = "; ".join(f"{r['variant']}: {r['reason']}" for _, r in tried)
    return None, {"accepted": False, "reason": reason, "variants": [r for _, r in tried]}
