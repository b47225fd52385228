"""The checkpoint directory written by ``attnrec train --out DIR`` and read by the exporter.

    config.json      {"model": ModelConfig, "train": TrainConfig, "dataset", "format",
                      "data_fingerprint", "data_files", "created_at"}
    model.pt         state_dict
    vocab.json       {"items": [item ids of indices 2..], "event_types": [...]}
    metrics.json     best epoch, validation and test metrics (protocol loo-full-ranking) with
                     their 95 % bootstrap intervals over users, per-epoch curve, train_seconds
    per_user.json    {"dataset", "protocol", "val": {"user_ids", "ranks"}, "test": {...}}: each
                     user's rank of the target (attnrec eval --compare pairs models on it)
    curve.png        training curve
    popularity.json  the top-100 item ids by training count
    samples.json     up to 256 real training inputs: [{"items", "types", "gaps"}] (model indices,
                     oldest first, not padded)
    content.json     with item content (``--items``): the attribute file's summary (categories,
                     brands, hashing, cold items); the features themselves are buffers of model.pt
    item_attributes.csv|.jsonl   with item content: a copy of the attribute file (the registry's too)
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from attnrec.errors import ModelError

from .data import Dataset, Vocab
from .model import AttnRec, ModelConfig
from .train import TrainConfig, training_arrays

__all__ = ["save_checkpoint", "load_checkpoint", "popularity", "write_curve"]

log = logging.getLogger(__name__)

FILES = ("config.json", "model.pt", "vocab.json", "metrics.json", "curve.png", "popularity.json", "samples.json")


def _write_json(path: Path, obj: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def popularity(ds: Dataset, k: int = 100) -> list[str]:
    """Top-k item ids by training-event count (ties: vocabulary order)."""
    c: Counter[int] = Counter()
    for s, n in zip(ds.users, ds.train_len, strict=True):
        c.update(s.items[:n])
    ranked = sorted((i for i in c if i >= 2), key=lambda i: (-c[i], i))
    return [ds.vocab.items[i - 2] for i in ranked[:k]]


def write_curve(path: Path, curve: list[dict[str, Any]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in curve]
    fig, ax1 = plt.subplots(figsize=(6, 3.5))
    ax1.plot(ep, [r["loss"] for r in curve], color="tab:blue", label="train loss")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("train loss", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ep, [r["val_ndcg@10"] for r in curve], color="tab:red", label="val NDCG@10")
    ax2.set_ylabel("validation NDCG@10", color="tab:red")
    ax1.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _samples(ds: Dataset, max_len: int, n: int = 256, seed: int = 0, warmup: int = 0,
             length: int | None = None) -> list[dict[str, list[int]]]:
    """Up to n real training inputs, oldest first, unpadded, at most ``length`` events (the full
    graph's input: ``history_len``): [{"items", "types", "gaps"}]."""
    items, types, gaps, _ = training_arrays(ds, max_len, warmup=warmup)
    length = length or max_len
    rng = np.random.default_rng(seed)
    pick: Any = np.sort(rng.choice(len(items), size=min(n, len(items)), replace=False)) if len(items) else []
    out = []
    for i in pick:
        keep = items[i] != 0
        out.append({"items": items[i][keep][-length:].tolist(), "types": types[i][keep][-length:].tolist(),
                    "gaps": gaps[i][keep][-length:].tolist()})
    return out


def save_checkpoint(
    out: str | Path,
    model: AttnRec,
    tcfg: TrainConfig,
    ds: Dataset,
    metrics: dict[str, Any],
) -> Path:
    """Write every checkpoint file into ``out`` (created if missing)."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    cfg = {
        "model": model.cfg.to_dict(),
        "train": tcfg.to_dict(),
        "dataset": ds.name,
        "format": ds.fmt,
        "data_fingerprint": ds.fingerprint,
        "data_files": ds.files,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    _write_json(d / "config.json", cfg)
    tmp = d / "model.pt.tmp"
    torch.save(model.state_dict(), tmp)
    os.replace(tmp, d / "model.pt")
    _write_json(d / "vocab.json", ds.vocab.to_dict())
    per_user = metrics.get("per_user")
    _write_json(d / "metrics.json", {k: v for k, v in metrics.items() if k != "per_user"})
    if per_user is not None:  # per-user ranks of val and test: intervals, paired comparisons
        _write_json(d / "per_user.json", {"dataset": ds.name, "protocol": metrics.get("protocol"), **per_user})
    else:
        (d / "per_user.json").unlink(missing_ok=True)
    _write_json(d / "popularity.json", popularity(ds))
    _write_json(d / "samples.json", _samples(ds, model.cfg.max_len, seed=tcfg.seed, warmup=model.cfg.warmup,
                                                   length=model.cfg.history_len))
    write_curve(d / "curve.png", metrics.get("curve", []), f"{ds.name}: best epoch {metrics.get('best_epoch')}")
    _save_content(d, ds)
    log.info("checkpoint written to %s", d)
    return d


def _save_content(d: Path, ds: Dataset) -> None:
    """content.json and a copy of the attribute file (or neither, removing a stale one)."""
    for old in [d / "content.json", *d.glob("item_attributes.*")]:
        old.unlink(missing_ok=True)
    if ds.content_info is None:
        return
    info = dict(ds.content_info)
    src = info.pop("path", None)
    if src:
        name = "item_attributes" + (".csv" if Path(src).suffix.lower() == ".csv" else ".jsonl")
        shutil.copyfile(src, d / name)
        info["file"] = name
    _write_json(d / "content.json", info)


def load_checkpoint(path: str | Path) -> tuple[AttnRec, dict[str, Any], dict[str, Any]]:
    """(model in eval mode, config.json dict, vocab.json dict) of a checkpoint directory."""
    d = Path(path)
    for name in ("config.json", "model.pt", "vocab.json"):
        if not (d / name).is_file():
            raise ModelError(f"{d}: not a checkpoint directory (missing {name})")
    try:
        cfg = json.loads((d / "config.json").read_text())
        vocab = json.loads((d / "vocab.json").read_text())
        mcfg = ModelConfig.from_dict(cfg["model"])
        model = AttnRec(mcfg)
        model.load_state_dict(torch.load(d / "model.pt", map_location="cpu", weights_only=True))
    except (ValueError, KeyError, RuntimeError, AssertionError) as exc:
        raise ModelError(f"{d}: cannot load checkpoint ({exc})") from None
    if Vocab.from_dict(vocab).n_items != mcfg.n_items:
        raise ModelError(f"{d}: vocab.json has {len(vocab['items']) + 2} entries, model expects {mcfg.n_items}")
    model.eval()
    return model, cfg, vocab
