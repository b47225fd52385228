"""Load-time checks of a registry model, with onnxruntime and numpy only (no torch, no onnx).

The worker's hot reload calls :func:`load_checked` off the hot path and swaps the returned
session in only when every check passes:

1. the manifest has every field and the expected contract names (``validate_manifest``);
2. ``model.onnx`` and ``items.json`` match their sha256 in the manifest (``verify_files``);
3. onnxruntime can parse the file (a corrupt or truncated file fails here);
4. the session's inputs/outputs match the contract: names, dtypes, ranks;
5. the manifest's golden input gives finite scores, in descending order, the expected top-K
   items and scores within tolerance, and never PAD, OOV or an excluded item.

Any failure raises :class:`attnrec.errors.ModelCheckError` saying which check and why.

Session options (:func:`session_options`) are chosen for a 2-core box that also runs Kafka,
Redis and the Faust event loop: full graph optimisation (fuses LayerNorm, GELU and
attention MatMuls), one intra-op thread by default (a second one helps large batches but
competes with the event loop; see docs/BENCHMARKS.md), sequential execution (the graph is
a chain, inter-op parallelism has nothing to do) and no spin-waiting (spinning threads burn
a core between batches that Kafka and Redis need).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from attnrec.errors import ModelCheckError
from attnrec.manifest import (
    INPUTS,
    OUTPUTS,
    STEP_INPUTS,
    STEP_OUTPUTS,
    is_incremental,
    load_items,
    outputs_of,
    read_manifest,
    validate_manifest,
    verify_files,
)

__all__ = [
    "GOLDEN_ATOL",
    "CheckedModel",
    "session_options",
    "make_session",
    "check_contract",
    "run_golden",
    "run_golden_step",
    "check_model",
    "load_checked",
]

log = logging.getLogger(__name__)

#: Absolute tolerance on golden scores (the check runs on another machine/ORT build than export).
GOLDEN_ATOL = 1e-3
_ORT_DTYPES = {"tensor(int64)": "int64", "tensor(float)": "float32"}


def session_options(*, intra_op_threads: int = 1, spinning: bool = False,
                    opt_level: str = "all") -> ort.SessionOptions:
    """The session options we deploy with (see the module docstring for why)."""
    so = ort.SessionOptions()
    so.graph_optimization_level = {
        "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
        "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    }[opt_level]
    so.intra_op_num_threads = intra_op_threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spin = "1" if spinning else "0"
    so.add_session_config_entry("session.intra_op.allow_spinning", spin)
    so.add_session_config_entry("session.inter_op.allow_spinning", spin)
    so.log_severity_level = 3  # errors only; we report problems through our own exceptions
    return so


def make_session(model_path: str | os.PathLike[str], *, intra_op_threads: int = 1,
                 spinning: bool = False, opt_level: str = "all") -> ort.InferenceSession:
    """An onnxruntime CPU session; parse failures become ModelCheckError."""
    try:
        return ort.InferenceSession(
            str(model_path),
            sess_options=session_options(intra_op_threads=intra_op_threads, spinning=spinning, opt_level=opt_level),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf types
        raise ModelCheckError(f"onnxruntime cannot load {model_path}: {type(exc).__name__}: {exc}") from None


def check_contract(session: ort.InferenceSession, inputs: list[dict[str, Any]] = INPUTS,
                   outputs: list[dict[str, Any]] = OUTPUTS) -> None:
    """Inputs/outputs have the contract's names, dtypes and ranks, in order."""
    for kind, got, want in (("input", session.get_inputs(), inputs), ("output", session.get_outputs(), outputs)):
        got_names = [g.name for g in got]
        want_names = [w["name"] for w in want]
        if got_names != want_names:
            raise ModelCheckError(f"{kind}s are {got_names}, the contract says {want_names}")
        for g, w in zip(got, want, strict=False):
            dtype = _ORT_DTYPES.get(g.type, g.type)
            if dtype != w["dtype"]:
                raise ModelCheckError(f"{kind} {g.name!r} is {dtype}, the contract says {w['dtype']}")
            if len(g.shape) != len(w["shape"]):
                raise ModelCheckError(f"{kind} {g.name!r} has shape {g.shape}, the contract says {w['shape']}")


def run_golden(session: ort.InferenceSession, manifest: dict[str, Any], *, atol: float = GOLDEN_ATOL) -> None:
    """Run the manifest's golden input and compare with the recorded top-K."""
    g = manifest["golden"]
    feed = {k: np.asarray(g[k], dtype=np.int64) for k in ("items", "types", "gaps", "exclude")}
    try:
        top_items, top_scores, attn = session.run(None, feed)[:3]
    except Exception as exc:
        raise ModelCheckError(f"golden input failed to run: {type(exc).__name__}: {exc}") from None
    _check_top(manifest, "golden", feed, top_items, top_scores, attn, min(feed["items"].shape[1], manifest["max_len"]),
               atol)


def run_golden_step(session: ort.InferenceSession, step: ort.InferenceSession, manifest: dict[str, Any], *,
                    atol: float = GOLDEN_ATOL) -> None:
    """The step graph continues the full graph: the cache the full graph returns for the golden
    input, plus the manifest's next events, must give the recorded top-K."""
    g, gs = manifest["golden"], manifest["golden_step"]
    feed = {k: np.asarray(g[k], dtype=np.int64) for k in ("items", "types", "gaps", "exclude")}
    step_feed = {k: np.asarray(gs[k], dtype=np.int64) for k in ("items", "types", "gaps", "exclude")}
    try:
        cache, cache_len = session.run(["cache", "cache_len"], feed)
        top_items, top_scores, attn, new_kv = step.run(None, {**step_feed, "cache": cache, "cache_len": cache_len})
    except Exception as exc:
        raise ModelCheckError(f"golden step failed to run: {type(exc).__name__}: {exc}") from None
    B = feed["items"].shape[0]
    want_kv = (B, *cache.shape[1:3], cache.shape[4])
    if new_kv.shape != want_kv or not np.isfinite(new_kv).all():
        raise ModelCheckError(f"golden step new_kv has shape {new_kv.shape} (expected {want_kv}) or non-finite values")
    _check_top(manifest, "golden_step", step_feed, top_items, top_scores, attn, manifest["max_len"], atol)


def _check_top(manifest: dict[str, Any], name: str, feed: dict[str, np.ndarray], top_items: np.ndarray,
               top_scores: np.ndarray, attn: np.ndarray, width: int, atol: float) -> None:
    """A golden run's outputs against the manifest's block ``name``: shapes, finite, sorted, no
    PAD/OOV/excluded item, the recorded top-K within ``atol`` (ties may swap)."""
    g = manifest[name]
    k = manifest["top_k"]
    B, L = feed["items"].shape[0], width
    if top_items.shape != (B, k) or top_scores.shape != (B, k) or attn.shape != (B, L):
        raise ModelCheckError(f"{name} output shapes {top_items.shape}, {top_scores.shape}, {attn.shape}; "
                              f"expected {(B, k)}, {(B, k)}, {(B, L)}")
    if not np.isfinite(top_scores).all() or not np.isfinite(attn).all():
        raise ModelCheckError(f"{name} input gives non-finite scores or attention (NaN/inf)")
    if (np.diff(top_scores, axis=1) > 1e-6).any():
        raise ModelCheckError(f"{name} top_scores are not in descending order")
    if (top_items <= 1).any():
        raise ModelCheckError(f"{name} top_items contain PAD or OOV")
    for row, excl in zip(top_items, feed["exclude"], strict=False):
        if np.isin(row, excl[excl > 1]).any():
            raise ModelCheckError(f"{name} top_items contain an excluded item")
    want_items = np.asarray(g["top_items"], dtype=np.int64)
    want_scores = np.asarray(g["top_scores"], dtype=np.float32)
    diff = float(np.abs(top_scores - want_scores).max())
    if diff > atol:
        raise ModelCheckError(f"{name} top_scores differ from the manifest by {diff:.3g} > {atol}")
    if not np.array_equal(top_items, want_items):
        # Items whose scores tie within atol may swap places; anything else is a different model.
        for got_row, want_row, s_row in zip(top_items, want_items, want_scores, strict=False):
            if not np.array_equal(got_row, want_row) and not _ties_explain(got_row, want_row, s_row, atol):
                raise ModelCheckError(f"{name} top_items {got_row.tolist()} != expected {want_row.tolist()}")


def _ties_explain(got: np.ndarray, want: np.ndarray, scores: np.ndarray, atol: float) -> bool:
    """True when every position where the lists differ holds a score tied (within 2*atol)
    with another expected score or with the K-th one (an item just outside the list)."""
    for i in np.nonzero(got != want)[0]:
        others = np.delete(scores, i)
        tied = np.abs(others - scores[i]) <= 2 * atol
        if not tied.any() and float(scores[i] - scores[-1]) > 2 * atol:
            return False
    return True


def check_model(version_dir: str | os.PathLike[str], manifest: dict[str, Any] | None = None, *,
                intra_op_threads: int = 1) -> tuple[ort.InferenceSession, ort.InferenceSession | None]:
    """Every load-time check; returns the ready sessions: the full graph and, for an
    incremental model, the step graph (else None). Raises ModelCheckError."""
    vdir = Path(version_dir)
    if manifest is None:
        manifest = read_manifest(vdir)
    validate_manifest(manifest)
    verify_files(vdir, manifest)
    session = make_session(vdir / manifest["model_file"], intra_op_threads=intra_op_threads)
    check_contract(session, INPUTS, outputs_of(manifest))
    run_golden(session, manifest)
    if not is_incremental(manifest):
        return session, None
    step = make_session(vdir / manifest["step_file"], intra_op_threads=intra_op_threads)
    check_contract(step, STEP_INPUTS, STEP_OUTPUTS)
    run_golden_step(session, step, manifest)
    return session, step


@dataclass(frozen=True)
class CheckedModel:
    """A version that passed every check: ``items[i - 2]`` is the id of model index ``i``.
    The worker wraps it in :class:`attnrec.stream.core.model.LoadedModel` with its lookup tables."""

    version: str
    path: Path
    manifest: dict[str, Any]
    session: ort.InferenceSession
    items: list[str]
    step_session: ort.InferenceSession | None = None  # incremental models: the step graph


def load_checked(version_dir: str | os.PathLike[str], *, intra_op_threads: int = 1) -> CheckedModel:
    """Load a version for serving: :func:`check_model` plus the item vocabulary."""
    vdir = Path(version_dir)
    manifest = read_manifest(vdir)
    session, step = check_model(vdir, manifest, intra_op_threads=intra_op_threads)
    items = load_items(vdir, manifest)
    log.info("model %s passed its checks (%d items, top_k %d)", manifest["version"], len(items), manifest["top_k"])
    return CheckedModel(version=manifest["version"], path=vdir, manifest=manifest, session=session, items=items,
                        step_session=step)
