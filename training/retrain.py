"""Retraining as production does it, in one place: the periodic trainer (exporter/trainer.py)
and the prequential evaluation (training/prequential.py) both call :func:`retrain_events`, and
both decide promotion with :func:`gate_decision`, so what the evaluation replays is what a
deployment runs.

A retrain trains on every event so far. With a previous model (the one serving) its vocabulary
grows by appending the new items (old items keep their indices; with ``min_item_support`` only
new items with that many events), its architecture is kept, and training starts from its
weights (old rows of grown tables copied, new rows fresh: :func:`warm_state`). Without one it
trains from scratch with the data's defaults. The budget is epochs (``epochs``, patience a third
of them, at least 2), never wall-clock time in a figure.

Torch is imported when a retrain runs; :func:`gate_decision` needs none (``attnrec models``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attnrec.events import ClickEvent

__all__ = ["Previous", "Retrained", "gate_decision", "grown_vocab", "warm_state", "retrain_events", "ARCHITECTURES"]

log = logging.getLogger(__name__)

#: What a retrain can train: the attention model (exported and served) or the GRU4Rec baseline
#: (training/baselines.py; evaluation only).
ARCHITECTURES = ("attention", "gru4rec")


def gate_decision(new_ndcg: float | None, current_ndcg: float | None, margin: float,
                  popular_ndcg: float | None = None) -> tuple[bool, str]:
    """Promote unless the new validation NDCG@10 is worse than current's by more than
    ``margin`` (relative). With no current model the new one must beat the popularity fallback
    on the same validation cases (``popular_ndcg``; not known for older models: then it is
    promoted). Returns (promote, reason)."""
    if new_ndcg is None:
        return False, "the new model has no validation ndcg@10"
    if current_ndcg is None:
        if popular_ndcg is None:
            return True, "no current model (or it has no validation ndcg@10) to compare with"
        if new_ndcg > popular_ndcg:
            return True, (f"no current model; validation ndcg@10 {new_ndcg:.5f} > {popular_ndcg:.5f} of the "
                          f"popularity fallback on the same cases")
        return False, (f"no current model, and this one is not better than the popularity fallback on validation "
                       f"(ndcg@10 {new_ndcg:.5f} <= {popular_ndcg:.5f}): the fallback (trending now, then the popularity "
                       f"list) keeps serving")
    floor = current_ndcg * (1.0 - margin)
    if new_ndcg >= floor:
        return True, f"validation ndcg@10 {new_ndcg:.5f} >= {floor:.5f} (current {current_ndcg:.5f} - {margin:.1%})"
    return False, f"validation ndcg@10 {new_ndcg:.5f} < {floor:.5f} (current {current_ndcg:.5f} - {margin:.1%})"


@dataclass
class Previous:
    """The model a retrain continues from: the module, its checkpoint config (``model``:
    the ModelConfig dict) and its vocabulary (``Vocab.to_dict``)."""

    model: Any
    config: dict[str, Any]
    vocab: dict[str, Any]


@dataclass
class Retrained:
    model: Any
    tcfg: Any
    ds: Any  # the dataset it was trained on (training/data.py)
    metrics: dict[str, Any]
    warm_start: bool


def grown_vocab(old: dict[str, Any], by_user: dict[str, list[ClickEvent]], min_item_support: int = 1) -> Any:
    """``old`` (``Vocab.to_dict``) with the new items of ``by_user`` appended in the order they
    first occur (training/data.py: :func:`~attnrec.training.data.item_order`)."""
    from .data import Vocab, item_order

    prev = Vocab.from_dict(old)
    known = set(prev.items)
    new = [i for i in item_order(by_user, min_item_support)[0] if i not in known]
    return Vocab(list(prev.items) + new, list(prev.event_types))


def warm_state(old_state: dict[str, Any], model: Any) -> dict[str, Any]:
    """The old weights in the new model's shapes: grown tables keep old rows, new rows fresh."""
    state = model.state_dict()
    for name, new in state.items():
        old = old_state.get(name)
        if old is None:
            continue
        if old.shape == new.shape:
            state[name] = old.clone()
        elif old.dim() == new.dim() and all(o <= n for o, n in zip(old.shape, new.shape, strict=False)):
            grown = new.clone()
            grown[tuple(slice(0, o) for o in old.shape)] = old
            state[name] = grown
    return state


def retrain_events(events: Iterable[ClickEvent], name: str, previous: Previous | None, *, epochs: int,
                   threads: int = 1, max_minutes: float = 0.0, min_item_support: int = 1, arch: str = "attention",
                   attributes: Path | None = None, fingerprint: str = "", files: list[str] | None = None,
                   seed: int | None = None, holdout: float = 0.0, progress: bool = False) -> Retrained:
    """Train on ``events`` as the periodic trainer does (module text): warm-started from
    ``previous`` when given. ``attributes``: the item file of a model with item content.
    ``max_minutes`` 0: no time budget (the epochs and patience decide). ``holdout`` > 0: validate
    on the last event of that share of the users instead of leave-one-out (training/data.py)."""
    import torch

    from .data import dataset_from_events, users_from_events
    from .defaults import default_configs
    from .model import AttnRec, ModelConfig
    from .train import fit_and_evaluate

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; use one of {ARCHITECTURES}")
    events = list(events)
    vocab = grown_vocab(previous.vocab, users_from_events(events), min_item_support) if previous is not None else None
    ds = dataset_from_events(events, name, vocab, fingerprint, files, min_item_support, holdout)
    if attributes is not None:  # a model with item content keeps it: the same attribute file
        from .content import attach_content, load_item_attributes

        attach_content(ds, load_item_attributes(attributes))
    mcfg, tcfg = default_configs(ds)
    if previous is not None:  # keep the architecture; only the vocabulary grows
        mcfg = ModelConfig.from_dict({**previous.config["model"], "n_items": ds.vocab.n_items})
    tcfg.epochs, tcfg.max_minutes, tcfg.threads = epochs, max_minutes, threads
    tcfg.patience = min(tcfg.patience, max(2, epochs // 3))
    if seed is not None:
        tcfg.seed = seed
    model = None
    if arch == "gru4rec":
        from .baselines import baseline_config, build_baseline

        tcfg.denoise = 0.0  # the baselines keep their published recipes (training/cli.py)
        mcfg = baseline_config(mcfg)
        torch.manual_seed(tcfg.seed)
        model = build_baseline(arch, mcfg)
    if model is None:
        torch.manual_seed(tcfg.seed)  # a grown table's new rows: the same for the same inputs, whatever ran before
    fresh = model if model is not None else AttnRec(mcfg)
    init = warm_state(previous.model.state_dict(), fresh) if previous is not None else None
    model, metrics = fit_and_evaluate(ds, mcfg, tcfg, init_state=init, model=model, progress=progress)
    metrics.update(warm_start=init is not None)
    return Retrained(model, tcfg, ds, metrics, init is not None)
