"""AttnRec: SASRec-family causal self-attention over a user's recent events, in one file.

Inputs are three LongTensors of shape (B, L), LEFT-padded with 0 so the newest event is at
position L-1 (see ``training/features.py`` for the vocabularies):

    items  item indices      (0 = PAD, 1 = OOV, 2.. real items)
    types  event-type index  (0 = PAD / not used)
    gaps   time-gap bucket   (0 = PAD / unknown / not used)

Embedding of position i = item + position(distance from the end, newest = 0) [+ type] [+ gap].
Blocks use hand-written masked attention (a large finite negative instead of -inf, so fully
padded rows never produce NaN and the graph exports to ONNX with dynamic batch and sequence
length) in one of two layouts (``ModelConfig.block``):

    "pre_ln":  x = x + Attn(LN1(x) -> LN1(x));    x = x + FFN(LN2(x))           (GELU FFN)
    "sasrec":  q = LN1(x); x = q + Attn(q -> x);  f = LN2(x); x = f + FFN(f)    (ReLU FFN)

"sasrec" is the block of the SASRec authors' code (and of RecTools' SASRec): the query is
normalised, keys and values are not, and the residuals start from the normalised tensors.
Scores are the final hidden state dotted with the (tied) item embeddings.

    hidden = model(items, types, gaps)            # (B, L, d), training: every position
    h, attn = model.final_state(items, types, gaps)  # (B, d), (B, L): inference, newest only
    scores = model.item_scores(h)                 # (B, n_items)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
import torch.nn as nn

__all__ = ["ConfigDict", "ModelConfig", "AttnRec", "MASK_VALUE", "BLOCKS"]

#: Added to masked attention logits. Finite so a fully masked row gives zeros, not NaN.
MASK_VALUE = -1e9
#: Block layouts, see the module docstring.
BLOCKS = ("pre_ln", "sasrec")


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a config dataclass (unknown keys of an older or newer
    checkpoint are ignored)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass
class ModelConfig(ConfigDict):
    n_items: int  # item vocabulary size, counting PAD (0) and OOV (1)
    max_len: int = 50  # longest sequence the position embedding covers
    d_model: int = 64  # embedding / hidden width
    n_blocks: int = 1  # transformer blocks
    n_heads: int = 1  # attention heads (d_model must divide evenly)
    dropout: float = 0.2  # on embeddings, attention weights and residual branches
    d_ff: int = 0  # feed-forward hidden width; 0 = d_model (SASRec's point-wise FFN)
    n_event_types: int = 0  # event-type vocabulary incl. PAD; 0 = not used
    n_gap_buckets: int = 0  # time-gap vocabulary incl. PAD; 0 = not used
    block: str = "pre_ln"  # block layout: "pre_ln" or "sasrec" (see the module docstring)

    def __post_init__(self) -> None:
        assert self.n_items >= 3, f"n_items={self.n_items} must count PAD, OOV and at least one item"
        assert self.d_model % self.n_heads == 0, f"d_model={self.d_model} not divisible by n_heads={self.n_heads}"
        assert self.max_len >= 1 and self.n_blocks >= 1, "max_len and n_blocks must be positive"
        assert self.block in BLOCKS, f"block must be one of {BLOCKS}, got {self.block!r}"

    @property
    def ff_width(self) -> int:
        return self.d_ff or self.d_model



class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, allowed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """xq (B, Lq, d) attends to xkv (B, L, d) where allowed (B, Lq, L) is True.

        Returns the output (B, Lq, d) and the attention weights (B, H, Lq, L); rows with no
        allowed key are all zeros.
        """
        B, Lq, d = xq.shape
        L = xkv.shape[1]
        H = self.n_heads
        hd = d // H
        q = self.q(xq).view(B, Lq, H, hd).transpose(1, 2)  # (B, H, Lq, hd)
        k = self.k(xkv).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        v = self.v(xkv).view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        logits = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (B, H, Lq, L)
        mask = allowed.unsqueeze(1)  # (B, 1, Lq, L)
        logits = logits.masked_fill(~mask, MASK_VALUE)
        att = torch.softmax(logits, dim=-1) * mask.to(logits.dtype)  # zero rows stay zero
        y = self.attn_drop(att) @ v  # (B, H, Lq, hd)
        y = y.transpose(1, 2).reshape(B, Lq, d)  # (B, Lq, d)
        return self.resid_drop(self.proj(y)), att


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.sasrec = cfg.block == "sasrec"
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_width),
            nn.ReLU() if self.sasrec else nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_width, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x (B, L, d) -> (B, L, d), or (B, 1, d) for the newest position only when last_only."""
        h = self.ln1(x)  # (B, L, d)
        kv = x if self.sasrec else h  # the SASRec block attends to un-normalised keys and values
        if last_only:
            x = x[:, -1:, :]  # (B, 1, d)
            hq = h[:, -1:, :]  # (B, 1, d)
            allowed = allowed[:, -1:, :]  # (B, 1, L)
        else:
            hq = h
        a, att = self.attn(hq, kv, allowed)
        if self.sasrec:
            f = self.ln2(hq + a)
            return f + self.ff(f), att
        x = x + a
        x = x + self.ff(self.ln2(x))
        return x, att


class AttnRec(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model)
        self.type_emb = nn.Embedding(cfg.n_event_types, cfg.d_model, padding_idx=0) if cfg.n_event_types else None
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.d_model, padding_idx=0) if cfg.n_gap_buckets else None
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_blocks)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init_weights)
        # Xavier-normal item embeddings: N(0,1)*sqrt(d) tied to the output made full-CE training
        # crawl on Beauty (DESIGN.md, Model).
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def _embed(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) x3 -> embeddings (B, L, d) and allowed-attention mask (B, L, L)."""
        assert items.dim() == 2, f"items must be (B, L), got shape {tuple(items.shape)}"
        assert items.shape[1] <= self.cfg.max_len, f"sequence of length {items.shape[1]} > max_len {self.cfg.max_len}"
        L = items.shape[1]
        # distance from the end: newest (index L-1) -> 0, so any L <= max_len works
        pos = torch.arange(L - 1, -1, -1, device=items.device)  # (L,)
        valid = items != 0  # (B, L)
        x = self.item_emb(items) + self.pos_emb(pos).unsqueeze(0)  # (B, L, d)
        if self.type_emb is not None:
            x = x + self.type_emb(types)
        if self.gap_emb is not None:
            x = x + self.gap_emb(gaps)
        x = self.emb_drop(x) * valid.unsqueeze(-1).to(x.dtype)  # (B, L, d), pads zeroed
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()  # (L, L)
        allowed = causal.unsqueeze(0) & valid.unsqueeze(1)  # (B, L, L): query i sees key j<=i, j not pad
        return x, allowed

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """Hidden states at every position, (B, L, d)."""
        x, allowed = self._embed(items, types, gaps)
        for block in self.blocks:
            x, _ = block(x, allowed)
        return self.ln_f(x)  # (B, L, d)

    def final_state(
        self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Hidden state of the newest position (B, d) and its last-layer attention (B, L).

        The last block computes only the newest position's query and feed-forward. The
        attention is averaged over heads: each row sums to 1 over non-pad keys, 0 on pads.
        """
        x, allowed = self._embed(items, types, gaps)
        for block in self.blocks[:-1]:
            x, _ = block(x, allowed)
        x, att = self.blocks[-1](x, allowed, last_only=True)  # (B, 1, d), (B, H, 1, L)
        h = self.ln_f(x[:, 0, :])  # (B, d)
        return h, att.mean(dim=1)[:, 0, :]  # (B, d), (B, L)

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """(B, d) or (N, d) -> scores over the whole vocabulary (.., n_items), tied embeddings."""
        return h @ self.item_emb.weight.t()
