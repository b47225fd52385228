"""The model's and the training loop's configurations: :class:`ModelConfig` (the architecture)
and :class:`TrainConfig` (the loop), with their defaults.

Torch-free, so code that only reads or writes a configuration (the command line, a
checkpoint's config.json) does not import torch.

    cfg = ModelConfig(n_items=1000, max_len=50)
    cfg.history_len   # events the newest position depends on
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

__all__ = ["ConfigDict", "ModelConfig", "TrainConfig", "BLOCKS", "POSITIONS", "LOSSES", "NEGATIVES_PER"]

#: Block layouts (training/model.py's docstring).
BLOCKS = ("pre_ln", "sasrec")
#: Position schemes (training/model.py's docstring).
POSITIONS = ("absolute", "relative")
#: Training losses (training/train.py's docstring).
LOSSES = ("ce", "sampled", "bce")
#: Where loss "sampled" draws its negatives.
NEGATIVES_PER = ("position", "row", "batch")


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
    block: str = "pre_ln"  # block layout: "pre_ln" or "sasrec" (see training/model.py)
    positions: str = "absolute"  # "absolute" or "relative" (cacheable; see training/model.py)
    # item content (training/content.py); all 0 = none. Vocabulary sizes count 0 = unknown / padding.
    n_categories: int = 0
    n_brands: int = 0
    n_price_buckets: int = 0
    n_text_buckets: int = 0  # hashed title n-grams
    title_tokens: int = 0  # title tokens per item
    text_vec_dim: int = 0  # a pretrained title encoder's vector width
    id_dropout: float = 0.0  # training: share of item ids masked per step, so items are scored from content too

    def __post_init__(self) -> None:
        assert self.n_items >= 3, f"n_items={self.n_items} must count PAD, OOV and at least one item"
        assert self.d_model % self.n_heads == 0, f"d_model={self.d_model} not divisible by n_heads={self.n_heads}"
        assert self.max_len >= 1 and self.n_blocks >= 1, "max_len and n_blocks must be positive"
        assert self.block in BLOCKS, f"block must be one of {BLOCKS}, got {self.block!r}"
        assert self.positions in POSITIONS, f"positions must be one of {POSITIONS}, got {self.positions!r}"
        assert 0 <= self.id_dropout < 1, f"id_dropout must be in [0, 1), got {self.id_dropout}"

    @property
    def has_content(self) -> bool:
        return bool(self.n_categories or self.n_brands or self.n_price_buckets or self.n_text_buckets
                    or self.text_vec_dim)

    @property
    def relative(self) -> bool:
        return self.positions == "relative"

    @property
    def history_len(self) -> int:
        """Events the newest position's state depends on: n_blocks*(L-1)+1 with the band mask;
        ``max_len`` with absolute positions (the window itself)."""
        return self.n_blocks * (self.max_len - 1) + 1 if self.relative else self.max_len

    @property
    def warmup(self) -> int:
        """Events a training row keeps before its first trained position (relative: the
        history a position depends on; absolute: none, as SASRec trains)."""
        return self.history_len - 1 if self.relative else 0

    @property
    def ff_width(self) -> int:
        return self.d_ff or self.d_model


@dataclass
class TrainConfig(ConfigDict):
    epochs: int = 200  # upper bound; early stopping usually ends training much sooner
    patience: int = 10  # epochs without a better validation NDCG@10 before stopping
    batch_size: int = 128
    lr: float = 1e-3
    lr_decay: float = 1.0  # multiply the learning rate by this after lr_patience epochs without a gain (1 = constant)
    lr_patience: int = 2  # epochs without a better validation NDCG@10 before each decay
    output_dropout: float = 0.0  # dropout on the item embeddings used as the output layer (RecTools' SASRec does this)
    ema: float = 0.0  # validate and keep an exponential moving average of the weights with this decay per step (0 = off)
    weight_decay: float = 0.0
    label_smoothing: float = 0.0  # loss=ce: share of the target's weight spread over all items
    denoise: float = 0.0  # share of random events inserted into each training batch (training/denoise.py; 0 = off)
    denoise_weight: float = 1.0  # weight of the attention mass on the inserted events in the loss
    drop_hardest: float = 0.0  # share of each batch's positions with the largest loss left out of it (0 = off)
    loss: str = "ce"  # ce | sampled | bce
    n_negatives: int = 256  # for loss=sampled (bce always uses one)
    negatives_per: str = "row"  # loss=sampled: draw negatives per "position", per "row" or per "batch"
    seed: int = 42
    max_minutes: float = 90.0  # wall-clock budget; training stops after the epoch that crosses it
    val_max_users: int = 0  # per-epoch validation on a seeded subset (0 = all validation users)
    all_windows: bool = False  # train on every max_len window of long histories, not only the newest
    bucket_batches: bool = False  # batch rows of similar length: less padding, but it trained worse on Beauty
    threads: int = 2  # torch intra-op threads

    def __post_init__(self) -> None:
        assert self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}"
        assert self.negatives_per in NEGATIVES_PER, f"negatives_per must be one of {NEGATIVES_PER}"
        assert 0 < self.lr_decay <= 1, f"lr_decay must be in (0, 1], got {self.lr_decay}"
        assert self.lr_patience >= 1, f"lr_patience must be >= 1, got {self.lr_patience}"
        assert 0 <= self.ema < 1, f"ema must be in [0, 1), got {self.ema}"
        assert 0 <= self.output_dropout < 1, f"output_dropout must be in [0, 1), got {self.output_dropout}"
        assert 0 <= self.label_smoothing < 1, f"label_smoothing must be in [0, 1), got {self.label_smoothing}"
        assert self.label_smoothing == 0 or self.loss == "ce", "label_smoothing needs loss='ce'"
        assert 0 <= self.denoise < 1, f"denoise must be in [0, 1), got {self.denoise}"
        assert self.denoise_weight >= 0, f"denoise_weight must be >= 0, got {self.denoise_weight}"
        assert 0 <= self.drop_hardest < 1, f"drop_hardest must be in [0, 1), got {self.drop_hardest}"
