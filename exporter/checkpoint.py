"""A training checkpoint as the exporter reads it: the model, its configuration and
vocabulary, and what the manifest carries besides (metrics, popularity, sample sequences for
the parity gate and the golden input). The files are ``attnrec.training.checkpoint``'s."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch.nn as nn

from attnrec.errors import ModelError

__all__ = ["Checkpoint", "load_checkpoint"]

log = logging.getLogger(__name__)


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
    content: dict[str, Any] | None = None  # content.json of a model with item content
    attributes_file: Path | None = None  # its copy of the item attribute file

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
    from ..training.checkpoint import load_checkpoint as _load

    model, config, vocab = _load(path)
    model.eval()
    metrics = _read_json(path / "metrics.json", default={})
    pop_raw = _read_json(path / "popularity.json", default=[])
    popularity = [str(x) for x in (pop_raw.get("items", []) if isinstance(pop_raw, dict) else pop_raw)]
    samples = _normalise_samples(_read_json(path / "samples.json", default=[]))
    content = attributes = None
    if getattr(model, "content", None) is not None:
        content = _read_json(path / "content.json") if (path / "content.json").is_file() else {}
        name = content.get("file")
        attributes = path / name if name and (path / name).is_file() else None
        if attributes is None:
            log.warning("%s: a model with item content but no attribute file to publish beside it", path)
    return Checkpoint(path=path, model=model, config=config, vocab=vocab, metrics=metrics,
                      popularity=popularity, samples=samples, content=content, attributes_file=attributes)
