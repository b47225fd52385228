"""The serving graph in torch eager mode, behind the onnxruntime session's ``run`` signature.

A baseline scorer for the benchmark (``ATTNREC_SCORER=torch``): the worker loads and checks
a registry version as usual, then scores with the exporter's :class:`ServingGraph` (model +
exclusion + top-K, the very module that was exported) over the checkpoint the manifest
names, instead of onnxruntime. Needs torch and the checkpoint directory.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnrec.errors import ModelCheckError

__all__ = ["TorchEagerSession", "torch_session_factory"]


class TorchEagerSession:
    """Stands in for an ``onnxruntime.InferenceSession`` (``run(names, feeds)``)."""

    def __init__(self, checkpoint_dir: str | Path, top_k: int, threads: int = 1, *, step: bool = False) -> None:
        import torch

        from .checkpoint import load_checkpoint
        from .graph import ServingGraph, StepGraph

        torch.set_num_threads(threads)
        self.torch = torch
        ck = load_checkpoint(checkpoint_dir)
        self.step = step
        self.graph = (StepGraph if step else ServingGraph)(ck.model.eval(), top_k).eval()
        if step:
            self.inputs: tuple[str, ...] = ("items", "types", "gaps", "cache", "cache_len", "exclude")
            self.outputs: tuple[str, ...] = ("top_items", "top_scores", "attn", "new_kv")
        else:
            self.inputs = ("items", "types", "gaps", "exclude")
            self.outputs = ("top_items", "top_scores", "attn") + (("cache", "cache_len") if ck.model.cfg.relative else ())

    def run(self, names: Sequence[str] | None, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        t = self.torch
        with t.inference_mode():
            out = self.graph(*(t.from_numpy(feeds[k]) for k in self.inputs))
        by = dict(zip(self.outputs, out, strict=True))
        return [by[n].numpy() for n in (names or by)]


def torch_session_factory(threads: int = 1) -> Any:
    """A :data:`attnrec.stream.core.model.SessionFactory` giving each loaded model a torch-eager session."""

    def make(model: Any) -> tuple[TorchEagerSession, TorchEagerSession | None]:
        ckpt = model.manifest.get("checkpoint")
        if not ckpt or not Path(ckpt).is_dir():
            raise ModelCheckError(f"torch scorer: checkpoint {ckpt!r} of {model.version} is not available")
        step = TorchEagerSession(ckpt, model.top_k, threads, step=True) if model.incremental else None
        return TorchEagerSession(ckpt, model.top_k, threads), step

    return make
