"""The serving graph: AttnRec + seen-item exclusion + top-K, exported to one ONNX file.

The graph is the contract the worker codes against (:data:`attnrec.manifest.INPUTS` /
``OUTPUTS``; dynamic B, L <= max_len, E)::

    items, types, gaps : int64 (B, L)   LEFT-padded, newest event at L-1
    exclude            : int64 (B, E)   item indices never to return (PAD-padded); every
                                        value must be in [0, n_items) -- map unknown ids to OOV
    -> top_items  int64   (B, K)   best first; PAD, OOV and excluded items are never among
                                   them while at least K eligible items exist
       top_scores float32 (B, K)   descending; -inf marks "no eligible item left" (drop those)
       attn       float32 (B, L)   the newest position's attention, averaged over blocks (or the
                                   last block's: ModelConfig.explain), for `because`

Exclusion is one ScatterElements of -inf over the score row (the given indices plus PAD and
OOV), followed by one TopK: no per-row Python loop anywhere.

An incremental model (relative positions) has two graphs (:mod:`attnrec.manifest`): this full
graph also returns ``cache`` (B, blocks, 2, L-1, d) and ``cache_len`` (B,), and the step graph
(:class:`StepGraph`) scores one new event per row from them.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from attnrec.errors import ModelError
from attnrec.manifest import CACHE_OUTPUTS, INPUTS, OOV, OUTPUTS, PAD, STEP_INPUTS

__all__ = ["OPSET", "ServingGraph", "StepGraph", "export_onnx", "export_step_onnx"]

OPSET = 17
_SPECIAL = (PAD, OOV)


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
        if not self.model.cfg.relative:
            h, attn = self.model.final_state(items, types, gaps)  # (B, d), (B, L)
            return self.rank(h, exclude) + (attn,)
        h, attn, cache, n = self.model.final_state(items, types, gaps, with_cache=True)
        return self.rank(h, exclude) + (attn, cache, n)

    def rank(self, h: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Scores over the catalogue with the excluded items (and PAD, OOV) at -inf, then top-K
        (or, with ``full_scores``, every score)."""
        scores = self.model.item_scores(h)  # (B, N)
        drop = torch.cat([exclude, self.special.expand(exclude.shape[0], 2)], dim=1)  # (B, E+2)
        neg = torch.full_like(drop, 0, dtype=scores.dtype) - math.inf  # (B, E+2)
        scores = scores.scatter(1, drop, neg)  # (B, N), excluded -> -inf
        if self.full_scores:
            return (scores,)
        top_scores, top_items = torch.topk(scores, self.top_k, dim=1)  # (B, K) x2, descending
        return top_items, top_scores


class StepGraph(ServingGraph):
    """An incremental model's step: one new event per row over the cache of the events before it
    -> top-K (or every score), the attention over the new event's window, and its keys and values."""

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,  # type: ignore[override]
                cache: torch.Tensor, cache_len: torch.Tensor, exclude: torch.Tensor) -> tuple[torch.Tensor, ...]:
        h, attn, new_kv = self.model.step(items, types, gaps, cache, cache_len)  # (B, d), (B, L), (B, blocks, 2, d)
        return self.rank(h, exclude) + (attn, new_kv)


def _example_inputs(max_len: int, batch: int = 2) -> tuple[torch.Tensor, ...]:
    L = min(max_len, 8) if max_len > 1 else 1
    items = torch.full((batch, L), 2, dtype=torch.long)
    items[0, 0] = 0
    zeros = torch.zeros_like(items)
    exclude = torch.full((batch, L + 1), 0, dtype=torch.long)
    return items, zeros, zeros, exclude


def export_onnx(model: nn.Module, path: str | Path, *, top_k: int, max_len: int,
                full_scores: bool = False) -> Path:
    """Export the serving graph (or its full-score variant) to one self-contained .onnx file; an
    incremental model's full graph also returns the cache."""
    graph = ServingGraph(model, top_k, full_scores=full_scores).eval()
    relative = model.cfg.relative  # type: ignore[union-attr]
    names_out = (["scores"] if full_scores else [o["name"] for o in OUTPUTS[:2]]) + ["attn"]
    dyn: dict[str, dict[int, str]] = {
        "items": {0: "B", 1: "L"}, "types": {0: "B", 1: "L"}, "gaps": {0: "B", 1: "L"},
        "exclude": {0: "B", 1: "E"}, "attn": {0: "B", 1: "W"},
    }
    if relative:
        names_out += [o["name"] for o in CACHE_OUTPUTS]
        dyn.update({"cache": {0: "B"}, "cache_len": {0: "B"}})
    for name in names_out[:-1]:
        dyn.setdefault(name, {0: "B"})
    # an incremental model reads its history (longer than the window): trace it that long
    length = model.cfg.history_len if relative else max_len  # type: ignore[union-attr]
    _export(graph, _example_inputs(length), Path(path), [i["name"] for i in INPUTS], names_out, dyn)
    _restore_unused_inputs(path)
    return Path(path)


def export_step_onnx(model: nn.Module, path: str | Path, *, top_k: int, full_scores: bool = False) -> Path:
    """Export an incremental model's step graph (or its full-score variant)."""
    cfg = model.cfg  # type: ignore[union-attr]
    graph = StepGraph(model, top_k, full_scores=full_scores).eval()
    names_in = [i["name"] for i in STEP_INPUTS]
    names_out = (["scores"] if full_scores else ["top_items", "top_scores"]) + ["attn", "new_kv"]
    dyn = {name: {0: "B"} for name in names_in + names_out}
    dyn["exclude"] = {0: "B", 1: "E"}
    B = 2
    example = (torch.full((B, 1), 2, dtype=torch.long), torch.zeros(B, 1, dtype=torch.long),
               torch.zeros(B, 1, dtype=torch.long), torch.zeros(B, cfg.n_blocks, 2, cfg.max_len - 1, cfg.d_model),
               torch.tensor([0, 3], dtype=torch.long), torch.zeros(B, 4, dtype=torch.long))
    _export(graph, example, Path(path), names_in, names_out, dyn)
    _restore_unused_inputs(path, STEP_INPUTS)
    return Path(path)


def _export(graph: nn.Module, example: tuple[torch.Tensor, ...], path: Path, names_in: list[str],
            names_out: list[str], dyn: dict[str, dict[int, str]]) -> None:
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript-based exporter: dynamo=True needs onnxscript (not installed here),
        # and this graph has no data-dependent control flow, so tracing captures it exactly.
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                graph, example, str(path), dynamo=False, opset_version=OPSET, input_names=names_in,
                output_names=names_out, dynamic_axes=dyn, do_constant_folding=True,
            )
        except Exception as exc:
            raise ModelError(f"ONNX export failed: {type(exc).__name__}: {exc}") from exc
    _rewrite_reverse_ranges(path)


def _restore_unused_inputs(path: str | Path, inputs: list[dict[str, Any]] = INPUTS) -> list[str]:
    """Put back contract inputs the tracer pruned, in contract order; returns their names.

    A model without event types or time gaps never reads ``types``/``gaps``, and the exporter
    drops unused inputs. The contract has all four always, so the worker feeds the same
    names whatever the model uses: an input no node reads costs nothing at run time.
    """
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(path))
    present = {i.name: i for i in model.graph.input}
    missing = [i["name"] for i in inputs if i["name"] not in present]
    if not missing:
        return []
    ordered = []
    for spec in inputs:
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
