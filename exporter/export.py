"""torch -> ONNX export, the whole path: ``export_checkpoint``.

Load a training checkpoint (:mod:`attnrec.exporter.checkpoint`), wrap the model in the serving graph
and export it (:mod:`attnrec.exporter.graph`), check parity with torch on real and random sequences
and record a golden input (:mod:`attnrec.exporter.parity`), optionally try int8
(:mod:`attnrec.exporter.quantize`), publish to the registry (which re-checks the published files with
onnxruntime), and optionally promote through the NDCG@10 gate (:mod:`attnrec.exporter.gate`).
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from attnrec.errors import ModelError, ParityError
from attnrec.manifest import (
    CACHE_OUTPUTS,
    INPUTS,
    N_GAP_BUCKETS,
    OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    gap_boundaries_ms,
)
from attnrec.registry import Registry

from .checkpoint import Checkpoint, load_checkpoint
from .gate import promote_gated
from .graph import OPSET, export_onnx, export_step_onnx
from .parity import PARITY_MAX_ABS_DIFF, PARITY_MIN_TOP10_AGREEMENT, make_golden, parity_check
from .samples import input_len
from .step import make_golden_step, step_parity

__all__ = ["build_manifest", "export_checkpoint"]

log = logging.getLogger(__name__)


def build_manifest(ckpt: Checkpoint, *, top_k: int, parity: dict[str, Any], golden: dict[str, Any],
                   parent: str | None) -> dict[str, Any]:
    cfg = ckpt.model_config
    data_fp = ckpt.config.get("data_fingerprint", ckpt.config.get("fingerprint"))
    if data_fp is None and isinstance(ckpt.config.get("dataset"), dict):
        data_fp = ckpt.config["dataset"].get("fingerprint")
    manifest = {
        "inputs": INPUTS,
        "outputs": OUTPUTS + (CACHE_OUTPUTS if cfg.get("positions") == "relative" else []),
        "opset": OPSET,
        "max_len": int(cfg["max_len"]),
        "top_k": top_k,
        "pad_index": 0,
        "oov_index": 1,
        "n_items": int(cfg["n_items"]),
        "uses_types": bool(cfg.get("n_event_types", 0)),
        "uses_gaps": bool(cfg.get("n_gap_buckets", 0)),
        # the serving side buckets time gaps with exactly these boundaries (training/features.py)
        "gap_boundaries_ms": gap_boundaries_ms(int(cfg.get("n_gap_buckets", 0) or N_GAP_BUCKETS)),
        "event_types": list(ckpt.vocab.get("event_types", [])),
        "explain": ckpt.model.cfg.explain,  # what the attn output (the because weights) holds (ModelConfig.explain)
        "popularity": ckpt.popularity[:200],
        "data_fingerprint": data_fp,
        "dataset": ckpt.config.get("dataset"),
        "model_config": cfg,
        "metrics": ckpt.metrics,
        "parity": parity,
        "golden": golden,
        "parent": parent,
        "checkpoint": str(ckpt.path.resolve()),
    }
    if ckpt.content is not None:  # item content: the graph's item table already holds it (export_checkpoint)
        manifest["item_content"] = {k: v for k, v in ckpt.content.items() if k not in ("categories", "brands")}
        manifest["item_content"].update(categories=len(ckpt.content.get("categories", [])),
                                        brands=len(ckpt.content.get("brands", [])))
    if cfg.get("positions") == "relative":
        manifest.update({
            "positions": "relative",
            "history_len": input_len(cfg),  # events the full graph reads (n_blocks * (L-1) + 1)
            "step_inputs": STEP_INPUTS,
            "step_outputs": STEP_OUTPUTS,
            "cache": {"blocks": int(cfg["n_blocks"]), "slots": int(cfg["max_len"]) - 1, "d_model": int(cfg["d_model"]),
                      "dtype": "float32"},
        })
    return manifest


def export_checkpoint(checkpoint_dir: str | Path, registry_root: str | Path, *, promote: bool = False,
                      force: bool = False, margin: float = 0.02, top_k: int = 10,
                      quantize: bool = False) -> str:
    """Export, check, publish (and with ``promote`` gate-promote) a checkpoint; returns the version.

    Raises ParityError when torch and onnxruntime disagree beyond the thresholds (nothing is
    published), ModelCheckError when the published files fail their load checks.
    """
    ckpt = load_checkpoint(checkpoint_dir)
    cfg = ckpt.model_config
    n_items = int(cfg["n_items"])
    if not 1 <= top_k <= n_items - 5:
        raise ModelError(f"top_k={top_k} must be between 1 and {n_items - 5} ({n_items - 2} real items, "
                         f"3 excluded in the golden check)")
    items = [str(x) for x in ckpt.vocab.get("items", [])]
    if len(items) != n_items - 2:
        raise ModelError(f"vocab.json has {len(items)} items, model config n_items={n_items} implies {n_items - 2}")
    registry = Registry(registry_root)
    # item content: the graph gets the combined item table (id + content) as its item embedding,
    # so the graph and the worker are those of a model without content; parity compares it with
    # the content model itself (ckpt.model)
    graph_model = ckpt.model.materialised() if ckpt.content is not None else ckpt.model
    with tempfile.TemporaryDirectory(prefix="attnrec-export-") as tmp_s:
        tmp = Path(tmp_s)
        serving = export_onnx(graph_model, tmp / "model.onnx", top_k=top_k, max_len=int(cfg["max_len"]))
        full = export_onnx(graph_model, tmp / "full.onnx", top_k=top_k, max_len=int(cfg["max_len"]), full_scores=True)
        parity = parity_check(ckpt, serving, full, top_k=top_k)
        log.info("parity: max_abs_diff %.3g, top-10 agreement %.4f over %d rows",
                 parity["max_abs_diff"], parity["top10_agreement"], parity["rows"])
        if not parity["passed"]:
            raise ParityError(
                f"parity failed: max_abs_diff {parity['max_abs_diff']:.3g} (limit {PARITY_MAX_ABS_DIFF}), "
                f"top-10 agreement {parity['top10_agreement']:.4f} (limit {PARITY_MIN_TOP10_AGREEMENT}); not published"
            )
        to_publish, step_path = serving, None
        quant: dict[str, Any] = {"requested": quantize, "applied": False}
        step_report: dict[str, Any] | None = None
        if cfg.get("positions") == "relative":
            step_path = export_step_onnx(graph_model, tmp / "step.onnx", top_k=top_k)
            step_full = export_step_onnx(graph_model, tmp / "step_full.onnx", top_k=top_k, full_scores=True)
            step_report = step_parity(ckpt, serving, step_path, step_full, top_k=top_k)
            log.info("step parity: max_abs_diff %.3g, top-10 agreement %.4f; step vs full: max_abs_diff %.3g, "
                     "top-10 agreement %.4f over %d rows", step_report["max_abs_diff"], step_report["top10_agreement"],
                     step_report["step_vs_full"]["max_abs_diff"], step_report["step_vs_full"]["top10_agreement"],
                     step_report["rows"])
            if not step_report["passed"]:
                raise ParityError(f"step-graph parity failed: {step_report['max_abs_diff']:.3g} / step vs full "
                                  f"{step_report['step_vs_full']['max_abs_diff']:.3g} (limit {PARITY_MAX_ABS_DIFF}), "
                                  f"top-10 agreement {step_report['top10_agreement']:.4f} / "
                                  f"{step_report['step_vs_full']['top10_agreement']:.4f}; not published")
            if quantize:
                quant["reason"] = "not tried: an incremental model's full and step graphs must stay exact together"
                quantize = False
        if quantize:
            from .quantize import choose_quantization

            qpath, report = choose_quantization(ckpt, serving, full, tmp)
            quant.update(report)
            if qpath is not None:
                to_publish, quant["applied"] = qpath, True
            log.info("quantization %s: %s", "applied" if quant["applied"] else "not applied", quant["reason"])
        golden = make_golden(ckpt, to_publish)
        manifest = build_manifest(ckpt, top_k=top_k, parity=parity, golden=golden,
                                  parent=registry.current_version())
        manifest["quantization"] = quant
        if step_path is not None:
            manifest["parity_step"] = step_report
            manifest["golden_step"] = make_golden_step(golden, to_publish, step_path, int(cfg["n_items"]))
        version = registry.publish(to_publish, manifest, items=items, step_onnx_path=step_path,
                                   attributes_path=ckpt.attributes_file)
    if promote:
        promote_gated(registry, version, force=force, margin=margin)
    return version
