"""torch -> ONNX export, the parity gate, the golden input and the promotion gate.

``export_checkpoint`` is the whole path: load a training checkpoint, wrap the model in the
serving graph, export it, check parity with torch on real and random sequences, record a
golden input, publish to the registry (which re-checks the published files with
onnxruntime), and optionally promote through the NDCG@10 gate.

The serving graph (the contract the worker codes against; dynamic B, L <= max_len, E)::

    items, types, gaps : int64 (B, L)   LEFT-padded, newest event at L-1
    exclude            : int64 (B, E)   item indices never to return (PAD-padded); every
                                        value must be in [0, n_items) -- map unknown ids to OOV
    -> top_items  int64   (B, K)   best first; PAD, OOV and excluded items are never among
                                   them while at least K eligible items exist
       top_scores float32 (B, K)   descending; -inf marks "no eligible item left" (drop those)
       attn       float32 (B, L)   last-layer attention of the newest position (for `because`)

Exclusion is one ScatterElements of -inf over the score row (the given indices plus PAD and
OOV), followed by one TopK: no per-row Python loop anywhere.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from attnrec.errors import ModelError, ParityError, RegistryError
from exporter.registry import INPUTS, OUTPUTS, Registry, _validation_ndcg
from training.features import N_GAP_BUCKETS, gap_boundaries_ms

__all__ = [
    "OPSET",
    "PARITY_MAX_ABS_DIFF",
    "PARITY_MIN_TOP10_AGREEMENT",
    "ServingGraph",
    "Checkpoint",
    "load_checkpoint",
    "export_onnx",
    "parity_check",
    "make_golden",
    "gate_decision",
    "promote_gated",
    "build_manifest",
    "export_checkpoint",
]

log = logging.getLogger(__name__)

OPSET = 17
#: Parity thresholds of issue 4: publish only within these.
PARITY_MAX_ABS_DIFF = 1e-4
PARITY_MIN_TOP10_AGREEMENT = 0.999
PARITY_BATCHES = (1, 7, 64)
_SPECIAL = (0, 1)  # PAD, OOV


class ServingGraph(nn.Module):
    """AttnRec + exclusion + top-K, tensors in and out (what gets exported).

    With ``full_scores`` the graph returns the masked score matrix (B, n_items) instead of
    top-K; the parity check exports that variant to compare every score, not only the top.
    """

    special: torch.Tensor  # (1, 2): PAD, OOV -- always excluded

    def __init__(self, model: nn.Module, top_k: int, *, full_scores: bool = False) -> None:
        super().__init__()
        self.model: Any = model  # AttnRec: final_state / item_scores
        self.top_k = top_k
        self.full_scores = full_scores
        self.register_buffer("special", torch.tensor([_SPECIAL], dtype=torch.long), persistent=False)  # (1, 2)

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
                exclude: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, attn = self.model.final_state(items, types, gaps)  # (B, d), (B, L)
        scores = self.model.item_scores(h)  # (B, N)
        drop = torch.cat([exclude, self.special.expand(exclude.shape[0], 2)], dim=1)  # (B, E+2)
        neg = torch.full_like(drop, 0, dtype=scores.dtype) - math.inf  # (B, E+2)
        scores = scores.scatter(1, drop, neg)  # (B, N), excluded -> -inf
        if self.full_scores:
            return scores, attn
        top_scores, top_items = torch.topk(scores, self.top_k, dim=1)  # (B, K) x2, descending
        return top_items, top_scores, attn


# --- checkpoints --------------------------------------------------------------------------------
@dataclass
class Checkpoint:
    """A loaded training checkpoint (see DESIGN.md and training/checkpoint.py)."""

    path: Path
    model: nn.Module
    config: dict[str, Any]
    vocab: dict[str, Any]
    metrics: dict[str, Any]
    popularity: list[str]
    samples: list[dict[str, list[int]]]

    @property
    def model_config(self) -> dict[str, Any]:
        return dict(self.config.get("model", {}))


def _read_json(path: Path, default: Any = None) -> Any:
    if not path.is_file():
        if default is not None:
            log.warning("%s is missing; using %r", path, default)
            return default
        raise ModelError(f"checkpoint file {path} is missing")
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise ModelError(f"{path} is not valid JSON: {exc}") from None


def _normalise_samples(raw: Any) -> list[dict[str, list[int]]]:
    """samples.json -> [{"items", "types", "gaps"}], oldest first, padding removed.

    training/checkpoint.py writes columns of LEFT-padded rows:
    ``{"max_len": L, "items": [[...], ...], "types": [[...], ...], "gaps": [[...], ...]}``;
    a list of per-sequence dicts (or of bare item lists) is accepted too.
    """
    if isinstance(raw, dict):
        items_col = raw.get("items", [])
        n = len(items_col)
        rows: list[Any] = [{"items": items_col[r],
                            "types": (raw.get("types") or [[0] * len(items_col[r])] * n)[r],
                            "gaps": (raw.get("gaps") or [[0] * len(items_col[r])] * n)[r]} for r in range(n)]
    else:
        rows = list(raw or [])
    out = []
    for s in rows:
        if isinstance(s, dict):
            items = [int(x) for x in s.get("items", [])]
            types = [int(x) for x in s.get("types") or [0] * len(items)]
            gaps = [int(x) for x in s.get("gaps") or [0] * len(items)]
        else:
            items = [int(x) for x in s]
            types, gaps = [0] * len(items), [0] * len(items)
        keep = [i for i, x in enumerate(items) if x != 0]  # drop the left padding
        if keep:
            out.append({"items": [items[i] for i in keep], "types": [types[i] for i in keep],
                        "gaps": [gaps[i] for i in keep]})
    return out


def load_checkpoint(checkpoint_dir: str | Path) -> Checkpoint:
    """Load a checkpoint directory with the training package's own loader."""
    path = Path(checkpoint_dir)
    if not path.is_dir():
        raise ModelError(f"checkpoint directory {path} does not exist")
    from training.checkpoint import load_checkpoint as _load

    model, config, vocab = _load(path)
    model.eval()
    metrics = _read_json(path / "metrics.json", default={})
    pop_raw = _read_json(path / "popularity.json", default=[])
    popularity = [str(x) for x in (pop_raw.get("items", []) if isinstance(pop_raw, dict) else pop_raw)]
    samples = _normalise_samples(_read_json(path / "samples.json", default=[]))
    return Checkpoint(path=path, model=model, config=config, vocab=vocab, metrics=metrics,
                      popularity=popularity, samples=samples)


# --- export -------------------------------------------------------------------------------------
def _example_inputs(max_len: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    L = min(max_len, 8) if max_len > 1 else 1
    items = torch.full((batch, L), 2, dtype=torch.long)
    items[0, 0] = 0
    zeros = torch.zeros_like(items)
    exclude = torch.full((batch, L + 1), 0, dtype=torch.long)
    return items, zeros, zeros, exclude


def export_onnx(model: nn.Module, path: str | Path, *, top_k: int, max_len: int,
                full_scores: bool = False) -> Path:
    """Export the serving graph (or its full-score variant) to one self-contained .onnx file."""
    graph = ServingGraph(model, top_k, full_scores=full_scores).eval()
    names_out = ["scores", "attn"] if full_scores else [o["name"] for o in OUTPUTS]
    dyn: dict[str, dict[int, str]] = {
        "items": {0: "B", 1: "L"}, "types": {0: "B", 1: "L"}, "gaps": {0: "B", 1: "L"},
        "exclude": {0: "B", 1: "E"}, "attn": {0: "B", 1: "L"},
    }
    for name in names_out[:-1]:
        dyn[name] = {0: "B"}
    path = Path(path)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: dynamo=True needs onnxscript (not installed here),
        # and this graph has no data-dependent control flow, so tracing captures it exactly.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph, _example_inputs(max_len), str(path), dynamo=False, opset_version=OPSET,
                input_names=[i["name"] for i in INPUTS], output_names=names_out, dynamic_axes=dyn,
                do_constant_folding=True,
            )
        except Exception as exc:
            raise ModelError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    _rewrite_reverse_ranges(path)
    _restore_unused_inputs(path)
    return path


def _restore_unused_inputs(path: Path) -> list[str]:
    """Put back contract inputs the tracer pruned, in contract order; returns their names.

    A model without event types or time gaps never reads ``types``/``gaps``, and the exporter
    drops unused inputs. The contract has all four always, so the worker feeds the same
    names whatever the model uses: an input no node reads costs nothing at run time.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {i.name: i for i in model.graph.input}
    missing = [i["name"] for i in INPUTS if i["name"] not in present]
    if not missing:
        return []
    ordered = []
    for spec in INPUTS:
        if spec["name"] in present:
            ordered.append(present[spec["name"]])
        else:
            ordered.append(helper.make_tensor_value_info(spec["name"], TensorProto.INT64, spec["shape"]))
    del model.graph.input[:]
    model.graph.input.extend(ordered)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return missing


def _rewrite_reverse_ranges(path: Path) -> int:
    """Replace ``Range(start, -1, -1)`` by ``start - Range(0, start + 1, 1)`` in place.

    AttnRec numbers positions by distance from the end (``arange(L - 1, -1, -1)``).
    onnxruntime 1.32's GatherToSliceFusion (optimisation level "extended" and above) turns
    ``Gather(pos_emb, Range(L-1, -1, -1))`` into a Slice whose end of -1 means "the last
    element", so the optimised graph fails (or would read the wrong rows). The rewritten
    form computes the same indices and is left alone by the fusion, so every consumer can
    use full optimisation without knowing about the bug. Returns the number of rewrites.
    """
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            consts[node.output[0]] = numpy_helper.to_array(node.attribute[0].t)
    new_nodes = []
    n = 0
    for node in model.graph.node:
        limit, delta = (consts.get(node.input[1]), consts.get(node.input[2])) if node.op_type == "Range" else (None, None)
        if (limit is None or delta is None or limit.size != 1 or delta.size != 1
                or int(limit) != -1 or int(delta) != -1 or limit.dtype != np.int64):
            new_nodes.append(node)
            continue
        start, out, tag = node.input[0], node.output[0], f"rev_range_{n}"
        new_nodes += [
            helper.make_node("Constant", [], [f"{tag}_zero"], value=numpy_helper.from_array(np.array(0, np.int64))),
            helper.make_node("Constant", [], [f"{tag}_one"], value=numpy_helper.from_array(np.array(1, np.int64))),
            helper.make_node("Add", [start, f"{tag}_one"], [f"{tag}_len"], name=f"{tag}_Add"),
            helper.make_node("Range", [f"{tag}_zero", f"{tag}_len", f"{tag}_one"], [f"{tag}_fwd"], name=f"{tag}_Range"),
            helper.make_node("Sub", [start, f"{tag}_fwd"], [out], name=f"{tag}_Sub"),
        ]
        n += 1
    if n:
        del model.graph.node[:]
        model.graph.node.extend(new_nodes)
        onnx.checker.check_model(model)
        onnx.save(model, str(path))
    return n


# --- parity -------------------------------------------------------------------------------------
def _pad_batch(seqs: list[dict[str, list[int]]], length: int) -> dict[str, np.ndarray]:
    """Sequences (oldest first) -> LEFT-padded (B, length) arrays; exclude = the seen items."""
    out = {k: np.zeros((len(seqs), length), dtype=np.int64) for k in ("items", "types", "gaps")}
    for r, s in enumerate(seqs):
        for k in out:
            tail = s[k][-length:]
            if tail:
                out[k][r, length - len(tail):] = tail
    out["exclude"] = out["items"].copy()
    return out


def _random_seqs(rng: np.random.Generator, n: int, length: int, cfg: dict[str, Any]) -> list[dict[str, list[int]]]:
    seqs = []
    for _ in range(n):
        m = int(rng.integers(1, length + 1))
        items = rng.integers(1, cfg["n_items"], size=m)  # includes OOV (1) now and then
        nt, ng = cfg.get("n_event_types", 0), cfg.get("n_gap_buckets", 0)
        types = rng.integers(1, nt, size=m) if nt > 1 else np.zeros(m, dtype=np.int64)
        gaps = rng.integers(0, ng, size=m) if ng > 1 else np.zeros(m, dtype=np.int64)
        seqs.append({"items": items.tolist(), "types": types.tolist(), "gaps": gaps.tolist()})
    return seqs


def _parity_cases(ckpt: Checkpoint, seed: int = 0) -> list[tuple[str, dict[str, np.ndarray]]]:
    """Real and random batches of 1, 7 and 64 rows at lengths 1, short and max_len."""
    cfg = ckpt.model_config
    max_len = int(cfg["max_len"])
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
                    seqs = _random_seqs(rng, b, length, cfg)
                cases.append((f"{source} B={b} L={length}", _pad_batch(seqs, length)))
    # exclusion width different from the sequence length (E != L), with duplicates and PAD
    batch = _pad_batch(_random_seqs(rng, 7, max_len, cfg), max_len)
    batch["exclude"] = rng.integers(0, cfg["n_items"], size=(7, max_len + 13)).astype(np.int64)
    cases.append((f"random B=7 L={max_len} E={max_len + 13}", batch))
    return cases


#: Two items whose torch scores differ by at most this are a tie: either order is correct.
TIE_TOLERANCE = 1e-5


def _top_agreement(t_scores: np.ndarray, t_items: np.ndarray, t_top: np.ndarray, o_items: np.ndarray) -> np.ndarray:
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
    (serving graph vs torch) agree position by position up to ties (see _top_agreement);
    ``top10_exact_agreement`` counts identical lists only, for the record.
    """
    from exporter.check import make_session

    serve = make_session(serving_onnx)
    full = make_session(full_onnx)
    graph = ServingGraph(ckpt.model, top_k, full_scores=True).eval()
    k10 = min(10, top_k)
    rows = agree = exact = 0
    worst = 0.0
    cases = []
    for name, batch in _parity_cases(ckpt, seed):
        with torch.no_grad():
            t_scores, t_attn = graph(*(torch.from_numpy(batch[k]) for k in ("items", "types", "gaps", "exclude")))
            t_top_scores, t_top_items = torch.topk(t_scores, top_k, dim=1)
        t_scores, t_attn = t_scores.numpy(), t_attn.numpy()
        o_scores, o_attn = full.run(None, batch)
        o_items, o_top_scores, o_attn2 = serve.run(None, batch)
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
        ok_rows = _top_agreement(t_scores, t_top_items.numpy()[:, :k10], tt[:, :k10], o_items[:, :k10])
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
    from exporter.check import make_session

    cfg = ckpt.model_config
    max_len = int(cfg["max_len"])
    rng = np.random.default_rng(12345)
    seqs = [ckpt.samples[0]] if ckpt.samples else _random_seqs(rng, 1, max_len, cfg)
    short = dict(seqs[0])
    seqs.append({k: v[-3:] for k, v in short.items()})
    batch = _pad_batch(seqs, max_len)
    # exclude each row's three newest items: exercises exclusion, leaves >= K eligible items
    batch["exclude"] = np.ascontiguousarray(batch["items"][:, -3:])
    top_items, top_scores, _ = make_session(serving_onnx).run(None, batch)
    if not np.isfinite(top_scores).all():
        raise ModelError("the golden input gives non-finite top scores; refusing to publish")
    return {
        **{k: batch[k].tolist() for k in ("items", "types", "gaps", "exclude")},
        "top_items": top_items.tolist(),
        "top_scores": [[float(x) for x in row] for row in top_scores],
        "atol": 1e-3,
    }


# --- promotion gate -----------------------------------------------------------------------------
def gate_decision(new_ndcg: float | None, current_ndcg: float | None, margin: float) -> tuple[bool, str]:
    """Promote unless the new validation NDCG@10 is worse than current's by more than
    ``margin`` (relative). Returns (promote, reason)."""
    if new_ndcg is None:
        return False, "the new model has no validation ndcg@10"
    if current_ndcg is None:
        return True, "no current model (or it has no validation ndcg@10) to compare with"
    floor = current_ndcg * (1.0 - margin)
    if new_ndcg >= floor:
        return True, f"validation ndcg@10 {new_ndcg:.5f} >= {floor:.5f} (current {current_ndcg:.5f} - {margin:.1%})"
    return False, f"validation ndcg@10 {new_ndcg:.5f} < {floor:.5f} (current {current_ndcg:.5f} - {margin:.1%})"


def promote_gated(registry: Registry, version: str, *, force: bool = False, margin: float = 0.02) -> dict[str, Any]:
    """Run the promotion gate for a published version; promote it or record the rejection.

    Returns the history entry (``decision`` is promoted, forced or rejected).
    """
    new = registry.read_manifest(version)
    current = registry.current_version()
    cur_ndcg = None
    if current:
        try:
            cur_ndcg = _validation_ndcg(registry.read_manifest(current).get("metrics", {}))
        except RegistryError:  # CURRENT names a version whose directory is gone: nothing to compare
            log.warning("CURRENT %s has no readable manifest; gating %s without a comparison", current, version)
    new_ndcg = _validation_ndcg(new.get("metrics", {}))
    ok, reason = gate_decision(new_ndcg, cur_ndcg, margin)
    figures = {"new_ndcg@10": new_ndcg, "current_ndcg@10": cur_ndcg, "current": current, "margin": margin}
    if ok or force:
        decision = "promoted" if ok else "forced"
        if not ok:
            reason = f"forced despite: {reason}"
        log.info("promotion gate: %s %s (%s)", decision, version, reason)
        return registry.promote(version, reason=reason, decision=decision, figures=figures)
    log.warning("promotion gate: rejected %s (%s); CURRENT stays %s", version, reason, current)
    return registry.record(version, decision="rejected", reason=reason, figures=figures, previous=current)


# --- the whole path -----------------------------------------------------------------------------
def build_manifest(ckpt: Checkpoint, *, top_k: int, parity: dict[str, Any], golden: dict[str, Any],
                   parent: str | None) -> dict[str, Any]:
    cfg = ckpt.model_config
    data_fp = ckpt.config.get("data_fingerprint", ckpt.config.get("fingerprint"))
    if data_fp is None and isinstance(ckpt.config.get("dataset"), dict):
        data_fp = ckpt.config["dataset"].get("fingerprint")
    return {
        "inputs": INPUTS,
        "outputs": OUTPUTS,
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
    with tempfile.TemporaryDirectory(prefix="attnrec-export-") as tmp_s:
        tmp = Path(tmp_s)
        serving = export_onnx(ckpt.model, tmp / "model.onnx", top_k=top_k, max_len=int(cfg["max_len"]))
        full = export_onnx(ckpt.model, tmp / "full.onnx", top_k=top_k, max_len=int(cfg["max_len"]), full_scores=True)
        parity = parity_check(ckpt, serving, full, top_k=top_k)
        log.info("parity: max_abs_diff %.3g, top-10 agreement %.4f over %d rows",
                 parity["max_abs_diff"], parity["top10_agreement"], parity["rows"])
        if not parity["passed"]:
            raise ParityError(
                f"parity failed: max_abs_diff {parity['max_abs_diff']:.3g} (limit {PARITY_MAX_ABS_DIFF}), "
                f"top-10 agreement {parity['top10_agreement']:.4f} (limit {PARITY_MIN_TOP10_AGREEMENT}); not published"
            )
        to_publish = serving
        quant: dict[str, Any] = {"requested": quantize, "applied": False}
        if quantize:
            from exporter.quantize import choose_quantization

            qpath, report = choose_quantization(ckpt, serving, full, tmp)
            quant.update(report)
            if qpath is not None:
                to_publish, quant["applied"] = qpath, True
            log.info("quantization %s: %s", "applied" if quant["applied"] else "not applied", quant["reason"])
        golden = make_golden(ckpt, to_publish)
        manifest = build_manifest(ckpt, top_k=top_k, parity=parity, golden=golden,
                                  parent=registry.current_version())
        manifest["quantization"] = quant
        version = registry.publish(to_publish, manifest, items=items)
    if promote:
        promote_gated(registry, version, force=force, margin=margin)
    return version
