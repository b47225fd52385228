"""Non-attention baselines in the attention model's harness (evaluation only: they do not export).

- ``gru4rec``: item embeddings (+ event-type and time-gap embeddings when the data has them,
  as the attention model) -> dropout -> one GRU layer (hidden size = embedding width) ->
  dropout; the state at a position is scored against the item embeddings (tied), like GRU4Rec
  with full cross-entropy (Hidasi & Czapla's later recipe, as in SASRec+'s comparisons).
- ``meanpool``: the attention model's event embeddings (item [+ type] [+ gap]) averaged over
  the non-padded window of the last ``max_len`` events, then the layer norm, point-wise
  feed-forward and final norm of a SASRec block -- the attention model with its attention
  replaced by a uniform mean, and no positions.

Both train with :func:`attnrec.training.train.train` -- the same loss (full softmax, label smoothing and
learning rate from the data defaults), training targets, random batches, weight average,
early stopping on validation NDCG@10, ``max_minutes`` budget rule and seed -- and are evaluated
by :func:`attnrec.training.evaluate.evaluate`. They read a window of ``max_len`` events (the model
config with ``positions="absolute"``: no warm-up columns), the same targets as the attention
model's rows. They implement the scorer interface of :class:`attnrec.training.model.AttnRec`:
``forward`` (hidden states at every position), ``final_state`` (newest state, and ``None``
for attention) and ``item_scores``, and hold the tied embeddings as ``item_emb``.

    model, metrics = fit_baseline(ds, "gru4rec", mcfg, tcfg)
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .data import Dataset
from .model import ModelConfig

__all__ = ["BASELINES", "GRU4Rec", "MeanPool", "build_baseline", "baseline_config", "fit_baseline"]

log = logging.getLogger(__name__)

#: The trained baselines of this module (``attnrec eval --baseline``; ``popular`` and
#: ``sasrec-bce`` live in training/evaluate.py and training/cli.py).
BASELINES = ("gru4rec", "meanpool")


class _Embeddings(nn.Module):
    """Item [+ type] [+ gap] embeddings as the attention model's (Xavier-normal items, PAD = 0)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
        self.type_emb = nn.Embedding(cfg.n_event_types, cfg.d_model, padding_idx=0) if cfg.n_event_types else None
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.d_model, padding_idx=0) if cfg.n_gap_buckets else None
        for emb in (self.type_emb, self.gap_emb):
            if emb is not None:
                nn.init.normal_(emb.weight, std=0.02)
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            for emb in (self.item_emb, self.type_emb, self.gap_emb):
                if emb is not None:
                    emb.weight[0].zero_()

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        x = self.item_emb(items)
        if self.type_emb is not None:
            x = x + self.type_emb(types)
        if self.gap_emb is not None:
            x = x + self.gap_emb(gaps)
        return x  # (B, T, d)


class _Scorer(nn.Module):
    """The scorer interface shared by the baselines (see the module docstring)."""

    cfg: ModelConfig
    emb: _Embeddings

    @property
    def item_emb(self) -> nn.Embedding:
        return self.emb.item_emb

    def final_state(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> tuple[torch.Tensor, None]:
        """The newest position's state (B, d); no attention (``None``)."""
        return self(items, types, gaps)[:, -1, :], None

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        return h @ self.item_emb.weight.t()


class GRU4Rec(_Scorer):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.emb = _Embeddings(cfg)
        self.drop_in = nn.Dropout(cfg.dropout)
        self.gru = nn.GRU(cfg.d_model, cfg.d_model, batch_first=True)
        self.drop_out = nn.Dropout(cfg.dropout)

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
                attentions: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T) left-padded -> states (B, T, d); the GRU starts at the first real event (padding
        never enters it), pad positions are zeros. No attention: ``attentions`` stays empty."""
        B, T = items.shape
        valid = items != 0
        n = valid.sum(1)  # (B,)
        x = self.drop_in(self.emb(items, types, gaps)) * valid.unsqueeze(-1)
        t = torch.arange(T, device=items.device).unsqueeze(0)
        to_right = ((t + (T - n).unsqueeze(1)) % T).unsqueeze(-1)  # (B, T, 1): events first, then pads
        xr = x.gather(1, to_right.expand(-1, -1, x.shape[2]))
        packed = pack_padded_sequence(xr, n.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.gru(packed)
        yr, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, d), zeros after n
        to_left = ((t - (T - n).unsqueeze(1)) % T).unsqueeze(-1)
        y = yr.gather(1, to_left.expand(-1, -1, yr.shape[2]))
        return self.drop_out(y) * valid.unsqueeze(-1)


class MeanPool(_Scorer):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.emb = _Embeddings(cfg)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(nn.Linear(cfg.d_model, cfg.ff_width), nn.ReLU(), nn.Dropout(cfg.dropout),
                                nn.Linear(cfg.ff_width, cfg.d_model), nn.Dropout(cfg.dropout))
        self.ln_f = nn.LayerNorm(cfg.d_model)

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
                attentions: list[torch.Tensor] | None = None) -> torch.Tensor:
        """(B, T) -> (B, T, d): at each position the mean of the event embeddings of the last
        ``max_len`` real events up to it (causal), then norm + feed-forward + norm. No
        attention: ``attentions`` stays empty."""
        valid = (items != 0).unsqueeze(-1).to(torch.float32)  # (B, T, 1)
        x = self.emb_drop(self.emb(items, types, gaps)) * valid
        cs, cnt = x.cumsum(1), valid.cumsum(1)
        L = self.cfg.max_len
        if items.shape[1] > L:  # keep only the last L positions of each window
            cs = cs - nn.functional.pad(cs, (0, 0, L, 0))[:, : cs.shape[1]]
            cnt = cnt - nn.functional.pad(cnt, (0, 0, L, 0))[:, : cnt.shape[1]]
        mean = cs / cnt.clamp(min=1.0)
        f = self.ln1(mean)
        return self.ln_f(f + self.ff(f)) * valid


def baseline_config(mcfg: ModelConfig) -> ModelConfig:
    """The attention model's config as a baseline reads it: a window of ``max_len`` events, no
    warm-up columns (``positions="absolute"``); width, dropout and side features unchanged."""
    return dataclasses.replace(mcfg, positions="absolute", n_blocks=1)


def build_baseline(name: str, mcfg: ModelConfig) -> nn.Module:
    if name == "gru4rec":
        return GRU4Rec(mcfg)
    if name == "meanpool":
        return MeanPool(mcfg)
    raise ValueError(f"unknown baseline {name!r}; use one of {BASELINES}")


def fit_baseline(ds: Dataset, name: str, mcfg: ModelConfig, tcfg: Any, *, progress: bool = False
                 ) -> tuple[nn.Module, dict[str, Any]]:
    """Train baseline ``name`` with the attention model's training loop and evaluate it on
    validation and test (:func:`attnrec.training.train.fit_and_evaluate`); returns (model, metrics)."""
    from .train import fit_and_evaluate

    bcfg = baseline_config(mcfg)
    torch.manual_seed(tcfg.seed)  # the same initial weights for the same seed
    model = build_baseline(name, bcfg)
    log.info("baseline %s: %d parameters, %s", name, sum(p.numel() for p in model.parameters()), bcfg)
    model, metrics = fit_and_evaluate(ds, bcfg, tcfg, progress=progress, model=model)
    metrics["model"] = {"baseline": name, **bcfg.to_dict()}
    return model, metrics
