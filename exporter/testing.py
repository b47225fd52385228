"""A random-weight checkpoint in the training package's layout, for tests and the micro-benchmark.

Writes exactly what ``training`` writes (DESIGN.md / training/checkpoint.py): config.json,
model.pt, vocab.json, metrics.json, popularity.json, samples.json. The weights are random
(seeded) so exports and parity can be exercised in seconds without training anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["write_random_checkpoint"]


def write_random_checkpoint(path: str | Path, *, n_items: int = 200, max_len: int = 20, d_model: int = 32,
                            n_blocks: int = 1, n_heads: int = 1, n_event_types: int = 9,
                            n_gap_buckets: int = 32, ndcg: float | None = 0.05, seed: int = 0,
                            n_samples: int = 64, positions: str = "absolute", n_cold: int = -1) -> Path:
    """Create a checkpoint directory with a seeded random AttnRec; returns the path. With
    ``positions="relative"`` an incremental model (random relative-position biases too). With
    ``n_cold >= 0`` a model with item content: a random attribute file (``item_attributes.csv``,
    ``content.json``) whose last ``n_cold`` items are cold (no id embedding)."""
    from ..training.model import AttnRec, ModelConfig

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    content = _random_content(out, n_items, n_cold, seed) if n_cold >= 0 else None
    cfg = ModelConfig(n_items=n_items, max_len=max_len, d_model=d_model, n_blocks=n_blocks, n_heads=n_heads,
                      n_event_types=n_event_types, n_gap_buckets=n_gap_buckets, positions=positions,
                      **(content[1] if content else {}))
    model = AttnRec(cfg).eval()
    if model.rel_bias is not None:
        with torch.no_grad():
            model.rel_bias.normal_(0.0, 0.5)
    if content is not None:
        model.set_content(content[0])
        with torch.no_grad():  # content vectors as large as the id embeddings, so both matter
            for emb in (model.content.category, model.content.brand, model.content.price, model.content.text):  # type: ignore[union-attr]
                emb.weight[1:].normal_(0.0, 0.3)
    torch.save(model.state_dict(), out / "model.pt")
    rng = np.random.default_rng(seed)
    config: dict[str, Any] = {"model": cfg.to_dict(), "train": {"seed": seed, "note": "random weights"},
                              "dataset": "random", "data_fingerprint": f"random-{seed}"}
    (out / "config.json").write_text(json.dumps(config))
    vocab = {"items": [f"item-{i}" for i in range(2, n_items)],
             "event_types": ["other", "view", "click", "like", "cart", "purchase", "gift", "share"][: max(0, n_event_types - 1)]}
    (out / "vocab.json").write_text(json.dumps(vocab))
    metrics = {"protocol": "loo-full-ranking", "val": {"ndcg@10": ndcg, "hr@10": None},
               "test": {"ndcg@10": ndcg, "hr@10": None}}
    (out / "metrics.json").write_text(json.dumps(metrics))
    (out / "popularity.json").write_text(json.dumps(vocab["items"][:20]))
    width = cfg.history_len
    samples: dict[str, Any] = {"max_len": width, "items": [], "types": [], "gaps": []}
    for _ in range(n_samples):  # training/checkpoint.py's layout: columns of left-padded rows
        m = int(rng.integers(1, width + 1))
        row = {
            "items": rng.integers(2, n_items, size=m).tolist(),
            "types": (rng.integers(1, n_event_types, size=m) if n_event_types > 1 else np.zeros(m, int)).tolist(),
            "gaps": (rng.integers(0, n_gap_buckets, size=m) if n_gap_buckets > 1 else np.zeros(m, int)).tolist(),
        }
        for k, v in row.items():
            samples[k].append([0] * (width - m) + v)
    (out / "samples.json").write_text(json.dumps(samples))
    return out


def _random_content(out: Path, n_items: int, n_cold: int, seed: int) -> tuple[dict[str, Any], dict[str, int]]:
    """A random attribute file in ``out`` (as training/checkpoint.py leaves it) -> the content
    arrays and the ModelConfig fields."""
    from ..training.content import content_arrays, content_model_fields, load_item_attributes

    rng = np.random.default_rng(seed + 1)
    path = out / "item_attributes.csv"
    words = ["red", "blue", "phone", "case", "kettle", "lamp", "pro", "mini", "smart", "eco"]
    with open(path, "w") as f:
        f.write("item_id,category,brand,price,title\n")
        for i in range(2, n_items):
            title = " ".join(rng.choice(words, size=3))
            f.write(f"item-{i},cat-{rng.integers(4)},brand-{rng.integers(6)},{rng.uniform(1, 500):.2f},{title}\n")
    table = load_item_attributes(path)
    items = [f"item-{i}" for i in range(2, n_items)]
    arrays = content_arrays(table, items, warm=set(range(2, n_items - n_cold)))
    info = {**table.summary(), "file": path.name, "cold_items": n_cold}
    (out / "content.json").write_text(json.dumps(info))
    return arrays, content_model_fields(info, arrays)
