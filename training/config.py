"""The training options, declared once: the architecture (:class:`ModelConfig`) and the training
loop (:class:`TrainConfig`).

Torch-free, so the settings and the command line read these fields without importing torch. A
field declared with ``metadata=option(...)`` is an option of ``attnrec train`` and ``attnrec
eval``: its setting ``train_<name>`` (one of the ``ATTNREC_TRAIN_*`` variables) and its flag
``--<name>`` take the field's type, bounds, choices and help from here
(:mod:`attnrec.training.settings`). Left unset, an option keeps what
:func:`attnrec.training.defaults.default_configs` chose for the data, which starts from the
defaults below. Every config checks the same bounds when it is built.

    cfg = ModelConfig(n_items=1000, max_len=50)
    cfg.history_len   # events the newest position depends on
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

__all__ = ["Option", "option", "options", "ConfigDict", "ModelConfig", "TrainConfig", "BLOCKS", "POSITIONS", "EXPLAIN", "LOSSES",
           "NEGATIVES_PER", "LR_SCHEDULES", "DATA"]

#: Block layouts (training/model.py's docstring).
BLOCKS = ("pre_ln", "sasrec")
#: Position schemes (training/model.py's docstring).
POSITIONS = ("absolute", "relative")
#: What the ``because`` explanation (the graphs' ``attn`` output) holds: the newest position's
#: attention averaged over all blocks, or the last block's (training/model.py: ``_explanation``).
EXPLAIN = ("all-blocks", "last-block")
#: Training losses (training/train.py's docstring).
LOSSES = ("ce", "sampled", "bce")
#: Learning-rate schedules (training/train.py: ``lr_factor``).
LR_SCHEDULES = ("constant", "linear", "cosine")
#: Where loss "sampled" draws its negatives.
NEGATIVES_PER = ("position", "row", "batch")
#: What leaving an option unset means when :func:`default_configs` picks it from the data.
DATA = "chosen from the data"


@dataclass(frozen=True)
class Option:
    """How a config field is offered as a setting and a flag (see the module docstring)."""

    help: str
    name: str = ""  # the setting's and the flag's name when it is not the field's (n_blocks: "blocks")
    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None
    choices: tuple[str, ...] = ()
    unset: str | None = None  # what leaving it unset means; None: the field's default
    pinned: bool = False  # the setting defaults to the field's default (never unset): nothing to choose from the data
    train_only: bool = False  # a flag of attnrec train only (item content: attnrec eval reads no item file)

    def admits(self, v: Any) -> bool:
        if self.choices:
            return v in self.choices
        return ((self.ge is None or v >= self.ge) and (self.gt is None or v > self.gt)
                and (self.le is None or v <= self.le) and (self.lt is None or v < self.lt))

    def expected(self) -> str:
        if self.choices:
            return "one of " + ", ".join(self.choices)
        return " and ".join(f"{sym} {b:g}" for sym, b in ((">=", self.ge), (">", self.gt), ("<=", self.le), ("<", self.lt))
                            if b is not None)


def option(help: str, **kw: Any) -> dict[str, Option]:
    """A config field's ``metadata``: the field is an option (:class:`Option`'s arguments)."""
    return {"option": Option(help, **kw)}


def options(cls: type) -> list[tuple[str, Option, Any]]:
    """``(field, option, default)`` of every option of a config class, in declaration order."""
    return [(f.name, f.metadata["option"], f.default if f.default is not MISSING else None)
            for f in fields(cls) if "option" in f.metadata]


class ConfigDict:
    """``to_dict`` / ``from_dict`` of a config dataclass (unknown keys of an older or newer
    checkpoint are ignored), and the options' bounds check."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Any:
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in known})

    def check_options(self) -> None:
        for name, opt, _ in options(type(self)):
            v = getattr(self, name)
            assert opt.admits(v), f"{name} must be {opt.expected()}, got {v!r}"


@dataclass
class ModelConfig(ConfigDict):
    n_items: int  # item vocabulary size, counting PAD (0) and OOV (1)
    max_len: int = field(default=50, metadata=option(
        "sequence length L: the events each position attends to (absolute positions: the longest sequence the position "
        "embedding covers)", ge=1, unset=DATA))
    d_model: int = field(default=64, metadata=option("embedding / hidden width", ge=1, unset=DATA))
    n_blocks: int = field(default=1, metadata=option("transformer blocks", name="blocks", ge=1, unset=DATA))
    n_heads: int = field(default=1, metadata=option("attention heads (the width must divide evenly)", name="heads", ge=1))
    dropout: float = field(default=0.2, metadata=option(
        "dropout on embeddings, attention weights and residual branches", ge=0, lt=1, unset=DATA))
    d_ff: int = 0  # feed-forward hidden width; 0 = d_model (SASRec's point-wise FFN)
    n_event_types: int = 0  # event-type vocabulary incl. PAD; 0 = not used
    n_gap_buckets: int = 0  # time-gap vocabulary incl. PAD; 0 = not used
    block: str = field(default="pre_ln", metadata=option(
        "transformer block layout (training/model.py)", choices=BLOCKS, unset=DATA))
    positions: str = "absolute"  # "absolute" or "relative" (cacheable; see training/model.py)
    # the because explanation (EXPLAIN): with relative positions the first block routes a cause into
    # later events, so the last block's attention alone found planted causes less often (docs/BENCHMARKS.md)
    explain: str = "all-blocks"
    # item content (training/content.py); all 0 = none. Vocabulary sizes count 0 = unknown / padding.
    n_categories: int = 0
    n_brands: int = 0
    n_price_buckets: int = 0
    n_text_buckets: int = 0  # hashed title n-grams
    title_tokens: int = 0  # title tokens per item
    text_vec_dim: int = 0  # a pretrained title encoder's vector width
    id_dropout: float = field(default=0.0, metadata=option(
        "with ITEMS, the share of item ids masked per training step so items are scored from content too", ge=0, lt=1,
        unset="0.3 with item content", train_only=True))

    def __post_init__(self) -> None:
        assert self.n_items >= 3, f"n_items={self.n_items} must count PAD, OOV and at least one item"
        self.check_options()
        assert self.d_model % self.n_heads == 0, f"d_model={self.d_model} not divisible by n_heads={self.n_heads}"
        assert self.positions in POSITIONS, f"positions must be one of {POSITIONS}, got {self.positions!r}"
        assert self.explain in EXPLAIN, f"explain must be one of {EXPLAIN}, got {self.explain!r}"

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
    epochs: int = field(default=200, metadata=option(
        "max epochs (early stopping usually ends training much sooner)", ge=1))
    patience: int = field(default=10, metadata=option(
        "epochs without a better validation NDCG@10 before stopping", ge=1, unset=DATA))
    batch_size: int = field(default=128, metadata=option("training batch size", ge=1))
    lr: float = field(default=1e-3, metadata=option("Adam learning rate", gt=0, unset=DATA))
    lr_decay: float = field(default=1.0, metadata=option(
        "multiply the learning rate by this after LR_PATIENCE epochs without a gain (1 = constant)", gt=0, le=1))
    lr_patience: int = field(default=2, metadata=option(
        "epochs without a validation gain before each learning-rate decay", ge=1))
    output_dropout: float = field(default=0.0, metadata=option(
        "dropout on the item embeddings when they score, training only (RecTools' SASRec does this)", ge=0, lt=1))
    ema: float = field(default=0.0, metadata=option(
        "decay per step of the weight average that is validated and kept (0 = off)", ge=0, lt=1,
        unset="a horizon of about 6 epochs"))
    weight_decay: float = field(default=0.0, metadata=option("Adam weight decay", ge=0))
    label_smoothing: float = field(default=0.0, metadata=option(
        "with loss ce, the share of the target's weight spread over all items (0 = off)", ge=0, lt=1, unset=DATA))
    denoise: float = field(default=0.0, metadata=option(
        "share of random events inserted into every training batch, whose attention is a loss, so the model learns "
        "to look away from misclicks (training/denoise.py; 0 = off)", ge=0, lt=1,
        unset="0.2 for short histories, 0.15 for event streams, 0 for long histories and for the baselines"))
    denoise_weight: float = field(default=1.0, metadata=option(
        "with DENOISE, the weight of the attention mass on the inserted events in the loss", ge=0))
    drop_hardest: float = field(default=0.0, metadata=option(
        "share of each training batch's positions with the largest loss left out of it, so noisy targets "
        "(misclicks) teach less (0 = off)", ge=0, lt=1))
    loss: str = field(default="ce", metadata=option(
        "full softmax (ce), sampled softmax (sampled) or SASRec's BCE (bce)", choices=LOSSES,
        unset="ce up to 200,000 items, else sampled"))
    n_negatives: int = field(default=256, metadata=option(
        "negatives of loss sampled (bce always uses one)", name="negatives", ge=1))
    negatives_per: str = field(default="row", metadata=option(
        "loss sampled draws negatives per position, per training row or once per batch", choices=NEGATIVES_PER))
    seed: int = field(default=42, metadata=option("random seed of training and of the evaluation's sampling", pinned=True))
    max_minutes: float = field(default=90.0, metadata=option(
        "wall-clock training budget in minutes: training stops after the epoch that crosses it (0 = none)", ge=0))
    max_cpu_minutes: float = field(default=0.0, metadata=option(
        "CPU-time training budget in minutes (the process's CPU time, all threads, validation included): no epoch "
        "starts that the last epoch's CPU time says would end past it (0 = none). A paused or slowed run stops at "
        "the same epoch, unlike MAX_MINUTES", ge=0))
    lr_schedule: str = field(default="constant", metadata=option(
        "learning rate over the run: constant, or decaying to 0 at the end of EPOCHS, linearly or along a cosine "
        "(after WARMUP_EPOCHS of linear warm-up)", choices=LR_SCHEDULES))
    warmup_epochs: float = field(default=0.0, metadata=option(
        "epochs of linear learning-rate warm-up from 0 (0 = none)", ge=0))
    warmup_targets: bool = field(default=False, metadata=option(
        "relative positions: train the positions of each training row's warm-up too (the events a row keeps before "
        "its first trained position so that position sees a served event's whole past): every position of a row is "
        "a target, about half the CPU per target when histories outrun the band, but the row's first positions see "
        "less past than a served event does"))
    val_max_users: int = 0  # per-epoch validation on a seeded subset (0 = all validation users)
    all_windows: bool = False  # train on every max_len window of long histories, not only the newest
    bucket_batches: bool = field(default=False, metadata=option(
        "batches of rows of similar length instead of random batches (less padding, ~11 % less CPU per epoch on "
        "Beauty, but ~0.01 lower validation NDCG@10)",
        name="bucket"))
    threads: int = field(default=2, metadata=option("torch intra-op threads", ge=1, pinned=True))

    def __post_init__(self) -> None:
        self.check_options()
        assert self.label_smoothing == 0 or self.loss == "ce", "label_smoothing needs loss='ce'"

    def rows(self, mcfg: ModelConfig) -> tuple[int, int]:
        """(max_len, warmup) of the training rows (:func:`attnrec.training.train.training_arrays`):
        ``max_len`` trained positions after ``warmup`` untrained ones, or with ``warmup_targets``
        all ``history_len`` positions trained."""
        if self.warmup_targets:
            return mcfg.max_len + mcfg.warmup, 0
        return mcfg.max_len, mcfg.warmup
