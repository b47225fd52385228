"""Sample batches in the serving graph's input layout, shared by the parity gate, the golden
input and the quantisation check."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["input_len", "pad_batch", "random_seqs"]


def input_len(cfg: dict[str, Any]) -> int:
    """Events the full graph reads for a model configuration (``ModelConfig.history_len``)."""
    L = int(cfg["max_len"])
    return int(cfg.get("n_blocks", 1)) * (L - 1) + 1 if cfg.get("positions") == "relative" else L


def pad_batch(seqs: list[dict[str, list[int]]], length: int) -> dict[str, np.ndarray]:
    """Sequences (oldest first) -> LEFT-padded (B, length) arrays; exclude = the seen items."""
    out = {k: np.zeros((len(seqs), length), dtype=np.int64) for k in ("items", "types", "gaps")}
    for r, s in enumerate(seqs):
        for k in out:
            tail = s[k][-length:]
            if tail:
                out[k][r, length - len(tail):] = tail
    out["exclude"] = out["items"].copy()
    return out


def random_seqs(rng: np.random.Generator, n: int, length: int, cfg: dict[str, Any]) -> list[dict[str, list[int]]]:
    seqs = []
    for _ in range(n):
        m = int(rng.integers(1, length + 1))
        items = rng.integers(1, cfg["n_items"], size=m)  # includes OOV (1) now and then
        nt, ng = cfg.get("n_event_types", 0), cfg.get("n_gap_buckets", 0)
        types = rng.integers(1, nt, size=m) if nt > 1 else np.zeros(m, dtype=np.int64)
        gaps = rng.integers(0, ng, size=m) if ng > 1 else np.zeros(m, dtype=np.int64)
        seqs.append({"items": items.tolist(), "types": types.tolist(), "gaps": gaps.tolist()})
    return seqs
