"""Model micro-benchmark: the exported serving graph in onnxruntime against torch eager.

    python -m attnrec.exporter.microbench --json runs/microbench.json [--checkpoint DIR] [--quick]

Per-batch latency of one scoring call (the serving graph: model + exclusion + top-10) for
batch 1, 32 and 256 at max_len 50 and 200, full-length rows (no padding: the worst case),
``exclude`` = the row's own items. Engines, all in the same process and run:

- ``ort``: onnxruntime with the deployed session options (attnrec.modelcheck.session_options:
  full graph optimisation, sequential, no spinning) at 1 and 2 intra-op threads;
- ``ort-basic``: the same at optimisation level "basic" (what full optimisation buys);
- ``ort-int8``: the dynamically int8-quantised graph (every MatMul), 1 thread;
- ``ort-int8enc``: int8 encoder, fp32 scoring MatMul (exporter.quantize variant "encoder");
- ``torch``: the same ServingGraph module in eager mode (inference_mode), 1 and 2 threads.

The model is AttnRec with DESIGN.md's budget shape (2 blocks, d=64, 1 head, event types
and time gaps, 12,101 real items) and seeded random weights, built once per max_len:
speed does not depend on what the weights are. ``--checkpoint`` uses a trained
checkpoint's configuration instead (its max_len replaces 50; 200 keeps the random model).

Each cell: warm-up calls, then repeated calls until both ``min_iters`` and ``min_seconds``
are reached; we report the median and p95 of per-call wall time and the median process CPU
time per call (on a shared, loaded box the 1-thread CPU figure is the trustworthy one). The JSON also records the
machine (lscpu model), library versions and the load average, because the box is shared.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["run", "main", "markdown_table"]

log = logging.getLogger(__name__)

BATCHES = (1, 32, 256)
LENGTHS = (50, 200)
BUDGET_MODEL = {"n_items": 12_103, "d_model": 64, "n_blocks": 2, "n_heads": 1, "n_event_types": 9,
                "n_gap_buckets": 32, "dropout": 0.0}


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _time_calls(fn: Any, *, min_iters: int, min_seconds: float, warmup: int = 3) -> dict[str, float]:
    """Wall time and process CPU time per call (medians, ms).

    On a shared box wall time includes waiting for a core; CPU time does not. For the
    1-thread engines (everything runs on the calling thread) CPU time per call is what the
    call costs on an idle core, so it is the contention-free figure; for 2 threads it is the
    sum over both threads.
    """
    for _ in range(warmup):
        fn()
    walls: list[float] = []
    cpus: list[float] = []
    start = time.perf_counter()
    while len(walls) < min_iters or time.perf_counter() - start < min_seconds:
        c, t = time.process_time(), time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
        if len(walls) >= 20 * min_iters:
            break
    wall = np.asarray(walls) * 1e3
    return {"p50_ms": float(np.median(wall)), "p95_ms": float(np.percentile(wall, 95)),
            "cpu_p50_ms": float(np.median(np.asarray(cpus) * 1e3)), "iters": len(wall)}


def _batch(rng: np.random.Generator, B: int, L: int, cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    items = rng.integers(2, cfg["n_items"], size=(B, L)).astype(np.int64)
    return {"items": items, "types": rng.integers(1, cfg["n_event_types"], size=(B, L)).astype(np.int64),
            "gaps": rng.integers(1, cfg["n_gap_buckets"], size=(B, L)).astype(np.int64), "exclude": items.copy()}


def run(*, checkpoint: str | None = None, quick: bool = False, top_k: int = 10) -> dict[str, Any]:
    import onnxruntime as ort
    import torch

    from attnrec.modelcheck import make_session

    from ..training.model import AttnRec, ModelConfig
    from .checkpoint import load_checkpoint
    from .graph import ServingGraph, export_onnx
    from .quantize import quantize_graph

    min_iters, min_seconds = (3, 0.1) if quick else (10, 0.5)
    rng = np.random.default_rng(0)
    results: list[dict[str, Any]] = []
    models: dict[int, dict[str, Any]] = {}
    torch_threads_before = torch.get_num_threads()
    with tempfile.TemporaryDirectory(prefix="attnrec-microbench-") as tmp_s:
        tmp = Path(tmp_s)
        for L in LENGTHS:
            if checkpoint and L == LENGTHS[0]:
                ck = load_checkpoint(checkpoint)
                model, cfg_d = ck.model, ck.model_config
                L = int(cfg_d["max_len"])
            else:
                torch.manual_seed(0)
                cfg_d = {**BUDGET_MODEL, "max_len": L}
                model = AttnRec(ModelConfig.from_dict(cfg_d)).eval()
            models[L] = {k: cfg_d[k] for k in ("n_items", "d_model", "n_blocks", "n_heads", "max_len")}
            fp32 = export_onnx(model, tmp / f"m{L}.onnx", top_k=top_k, max_len=L)
            int8 = quantize_graph(fp32, tmp / f"m{L}.int8.onnx", variant="all")
            int8_enc = quantize_graph(fp32, tmp / f"m{L}.int8enc.onnx", variant="encoder")
            sessions = {
                ("ort", 1): make_session(fp32, intra_op_threads=1),
                ("ort", 2): make_session(fp32, intra_op_threads=2),
                ("ort-basic", 1): make_session(fp32, intra_op_threads=1, opt_level="basic"),
                ("ort-int8", 1): make_session(int8, intra_op_threads=1),
                ("ort-int8enc", 1): make_session(int8_enc, intra_op_threads=1),
            }
            graph = ServingGraph(model, top_k).eval()
            for B in BATCHES:
                feed = _batch(rng, B, L, cfg_d)
                tfeed = tuple(torch.from_numpy(feed[k]) for k in ("items", "types", "gaps", "exclude"))
                # same answer from every engine before timing anything
                ref_items = sessions[("ort", 1)].run(["top_items"], feed)[0]
                with torch.inference_mode():
                    t_items = graph(*tfeed)[0].numpy()
                agree = float((t_items == ref_items).all(axis=1).mean())
                for (engine, threads), sess in sessions.items():
                    stats = _time_calls(lambda s=sess, f=feed: s.run(None, f), min_iters=min_iters, min_seconds=min_seconds)
                    results.append({"engine": engine, "threads": threads, "max_len": L, "batch": B, **stats,
                                    "us_per_event": stats["p50_ms"] * 1e3 / B})
                for threads in (1, 2):
                    torch.set_num_threads(threads)

                    def call(g: Any = graph, f: Any = tfeed) -> None:
                        with torch.inference_mode():
                            g(*f)

                    stats = _time_calls(call, min_iters=min_iters, min_seconds=min_seconds)
                    results.append({"engine": "torch", "threads": threads, "max_len": L, "batch": B, **stats,
                                    "us_per_event": stats["p50_ms"] * 1e3 / B, "top10_agreement_vs_ort": agree})
                log.info("max_len %d batch %d done", L, B)
    torch.set_num_threads(torch_threads_before)
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, "-m", "attnrec.exporter.microbench", *sys.argv[1:]]),
        "machine": {"cpu": _cpu_model(), "cores": os.cpu_count(), "loadavg_before_after": None},
        "versions": {"onnxruntime": ort.__version__, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "models": {str(k): v for k, v in models.items()},
        "top_k": top_k,
        "session_options": {"graph_optimization_level": "ORT_ENABLE_ALL (ort-basic: ORT_ENABLE_BASIC)",
                            "execution_mode": "sequential", "inter_op_threads": 1, "allow_spinning": False},
        "timing": {"min_iters": min_iters, "min_seconds": min_seconds, "warmup": 3},
        "results": results,
    }


def markdown_table(report: dict[str, Any], *, metric: str = "p50_ms") -> str:
    """Per-call median (``p50_ms`` wall or ``cpu_p50_ms``) in ms, and µs per event."""
    cols = [("ort", 1), ("ort", 2), ("ort-basic", 1), ("ort-int8", 1), ("ort-int8enc", 1), ("torch", 1), ("torch", 2)]
    idx = {(r["engine"], r["threads"], r["max_len"], r["batch"]): r for r in report["results"]}
    head = "| max_len | batch | " + " | ".join(f"{e} {t}t" for e, t in cols) + " | torch 1t / ORT 1t |"
    lines = [head, "|" + "---|" * (len(cols) + 3)]
    for L in sorted({r["max_len"] for r in report["results"]}):
        for B in BATCHES:
            cells = []
            for e, t in cols:
                r = idx.get((e, t, L, B))
                cells.append(f"{r[metric]:.2f} ({r[metric] * 1e3 / B:.0f} µs/ev)" if r else "-")
            o, tt = idx.get(("ort", 1, L, B)), idx.get(("torch", 1, L, B))
            speed = f"{tt[metric] / o[metric]:.1f}x" if o and tt and o[metric] > 0 else "-"
            lines.append(f"| {L} | {B} | " + " | ".join(cells) + f" | {speed} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m attnrec.exporter.microbench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", type=Path, required=True, help="write the results here")
    p.add_argument("--checkpoint", default=os.environ.get("ATTNREC_CHECKPOINT"),
                   help="use a trained checkpoint's model for the first length (env ATTNREC_CHECKPOINT)")
    p.add_argument("--quick", action="store_true", help="fewer iterations (smoke test)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)  # our progress, not onnxruntime.quantization's per-tensor chatter
    before = os.getloadavg()
    report = run(checkpoint=args.checkpoint, quick=args.quick)
    report["machine"]["loadavg_before_after"] = [list(before), list(os.getloadavg())]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wall-clock median per call, ms (load average before/after: {report['machine']['loadavg_before_after']})")
    print(markdown_table(report))
    print("\nprocess CPU time median per call, ms (1-thread columns = cost on an idle core)")
    print(markdown_table(report, metric="cpu_p50_ms"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
