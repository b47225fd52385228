"""The settings of ``attnrec train`` and ``attnrec eval``: the data, the training options and
what to evaluate.

The training options are not declared here: every field of :class:`~attnrec.training.config.ModelConfig`
and :class:`~attnrec.training.config.TrainConfig` declared as an ``option`` becomes the setting
``train_<name>`` (an ``ATTNREC_TRAIN_*`` variable) with the field's type, bounds, choices and help, and
the flag ``--<name>`` of both commands (:func:`option_flags`). Unset (None), an option keeps the
value the data defaults chose (:func:`attnrec.training.defaults.default_configs`); a pinned
option (seed, threads) defaults to the field's default. Torch-free.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, create_model

from attnrec.settings import Settings, env_name

from .config import ModelConfig, Option, TrainConfig, options

__all__ = ["TrainingSettings", "PrequentialSettings", "OPTIONS", "option_flags", "log_spec"]

#: ``(config class, field, setting, option, the field's default)`` of every training option,
#: model options first.
OPTIONS: tuple[tuple[type, str, str, Option, Any], ...] = tuple(
    (cls, name, f"train_{opt.name or name}", opt, default)
    for cls in (ModelConfig, TrainConfig) for name, opt, default in options(cls))


def option_flags(command: str) -> tuple[tuple[str, str], ...]:
    """``(flag, setting)`` of the training options of ``command`` (train or eval)."""
    return tuple((f"--{setting.removeprefix('train_').replace('_', '-')}", setting) for _, _, setting, opt, _ in OPTIONS
                 if command == "train" or not opt.train_only)


def _field(cls: type, name: str, setting: str, opt: Option, default: Any) -> tuple[Any, Any]:
    """The pydantic field of one option: its type (a Literal of its choices), optional unless
    pinned; its bounds; a description that starts with the variable and says what unset means."""
    typ: Any = Literal[opt.choices] if opt.choices else typing.get_type_hints(cls)[name]  # type: ignore[valid-type]
    shown = str(default).lower() if isinstance(default, bool) else f"{default:g}" if isinstance(default, float) else default
    unset = "" if opt.pinned else f" (unset: {opt.unset if opt.unset is not None else shown})"
    desc = f"{env_name(setting)}: {opt.help}{unset}"
    bounds = {k: v for k, v in (("ge", opt.ge), ("gt", opt.gt), ("le", opt.le), ("lt", opt.lt)) if v is not None}
    if opt.pinned:
        return typ, Field(default, description=desc, **bounds)
    return typ | None, Field(None, description=desc, **bounds)


#: The formats ``--format`` takes (training/data.py; the event logs: training/logs.py).
DataFormat = Literal["s3", "gsasrec", "events", "ml1m-loo-all", "yoochoose", "taobao", "diginetica", "table"]


class _Data(Settings):
    """The data both commands read (first, so the documentation lists them first)."""

    data: Path | None = Field(None, description="ATTNREC_DATA: dataset: a file, a gsasrec split directory, a directory of *.jsonl events, or an event log (a file or a directory of its files)")
    data_format: DataFormat = Field("events", description="ATTNREC_DATA_FORMAT: s3, gsasrec, events (our schema), ml1m-loo-all (ours: every user of a gsasrec directory's train/input.txt split leave-one-out; training/data.py), or an event log: yoochoose (session-rec TSV or the challenge's .dat files), taobao (UserBehavior CSV), diginetica (item views), table (any CSV/JSONL with DATA_COLUMNS)")
    data_columns: str | None = Field(None, description="ATTNREC_DATA_COLUMNS: format table: where each field is, user=COL (or session=COL),item=COL,time=COL[,type=COL][,category=COL]; column numbers from 0 for a CSV without a header")
    data_types: str | None = Field(None, description="ATTNREC_DATA_TYPES: event types of a log as ours, VALUE=TYPE,... (pv=view,fav=like,buy=purchase; *=TYPE for the rest; TYPE drop leaves the rows out); taobao's pv/cart/fav/buy are mapped unless overridden")
    data_time_unit: Literal["auto", "s", "ms", "iso"] = Field("auto", description="ATTNREC_DATA_TIME_UNIT: format table: unix seconds, milliseconds or ISO 8601 times (auto: numbers below 10^11 are seconds, text is ISO 8601)")
    data_min_item_support: int = Field(1, ge=1, description="ATTNREC_DATA_MIN_ITEM_SUPPORT: event data: items with fewer events are left out of the vocabulary (read as unknown, never recommended; the worker still records them); training reports how many items have one event")
    train_out: Path | None = Field(None, description="ATTNREC_TRAIN_OUT: checkpoint directory to write (attnrec train)")


_Options = create_model("_Options", __base__=_Data, __module__=__name__,
                        **{option[2]: _field(*option) for option in OPTIONS})


class TrainingSettings(_Options):  # type: ignore[misc,valid-type]
    """The base settings plus the data, the training options (generated, see the module text),
    the features to leave out, the item file and the evaluation's."""

    sections: ClassVar[dict[str, str]] = {"data": "Training and evaluation (`attnrec train`, `attnrec eval`)"}

    train_no_types: bool = Field(False, description="ATTNREC_TRAIN_NO_TYPES: ignore event types even when the data has them")
    train_no_gaps: bool = Field(False, description="ATTNREC_TRAIN_NO_GAPS: ignore time gaps even when the data has timestamps")
    train_allocator: Literal["auto", "jemalloc", "system"] = Field("auto", description="ATTNREC_TRAIN_ALLOCATOR: the memory allocator train, eval and prequential run under when started from the shell: jemalloc keeping its freed pages (0.82x the CPU of a Beauty run, the same figures, +0.5 GB of memory; training/allocator.py), system (glibc's malloc), auto (jemalloc when its library is installed, else system)")
    train_items: Path | None = Field(None, description="ATTNREC_TRAIN_ITEMS: item attribute file (CSV or JSONL: item_id, category, brand, price_bucket or price, title) joined into the item representation; its items without events become cold items scored from content")
    eval_model: Path | None = Field(None, description="ATTNREC_EVAL_MODEL: checkpoint directory to evaluate (from attnrec train)")
    eval_baseline: Literal["popular", "sasrec-bce", "gru4rec", "meanpool"] | None = Field(None, description="ATTNREC_EVAL_BASELINE: evaluate a baseline instead of a model, trained here on the data with the train options (popular: training counts; sasrec-bce: the attention model with SASRec's BCE loss; gru4rec, meanpool: non-attention models, training/baselines.py); evaluation only, nothing is exported")
    eval_train: bool = Field(False, description="ATTNREC_EVAL_TRAIN: train the attention model here with the data defaults and the train options, then evaluate it (no checkpoint is written; instead of MODEL)")
    eval_noise: float = Field(0.0, ge=0, lt=1, description="ATTNREC_EVAL_NOISE: share of random catalogue items inserted into every user's training events and validation/test input (targets untouched; seeded by SEED); the model is trained on the noisy data, so it needs TRAIN or BASELINE (training/noise.py)")
    eval_keep_history: bool = Field(False, description="ATTNREC_EVAL_KEEP_HISTORY: do not exclude the user's input items from the ranking (default: excluded, the published protocol)")
    eval_split: Literal["test", "val"] = Field("test", description="ATTNREC_EVAL_SPLIT: which split to report")
    eval_json: str = Field("-", description="ATTNREC_EVAL_JSON: write the result JSON to this file (- = stdout only)")
    eval_compare: list[str] | None = Field(None, description="ATTNREC_EVAL_COMPARE: saved results (a result JSON of attnrec eval, or a checkpoint directory) to compare with, paired on the users of SPLIT: the bootstrap interval of the per-user difference of each metric, a tie when it holds 0; alone, two sides A B (each one file or several joined by commas, averaged per user: seeds) are compared without evaluating anything (training/compare.py)")


def log_spec(fmt: str, columns: str | None, types: str | None, time_unit: str = "auto") -> Any:
    """The :class:`~attnrec.training.logs.LogSpec` of these settings' values (None for s3, gsasrec
    and events); a mapping that does not apply to the format is a :class:`ConfigError`."""
    from attnrec.errors import ConfigError, DataError

    from .logs import LOG_FORMATS, LogSpec, parse_columns, parse_types

    if fmt not in LOG_FORMATS:
        if columns or types:
            raise ConfigError(f"--columns and --types read an event log (yoochoose, taobao, diginetica, table), not format {fmt}")
        return None
    if columns and fmt != "table":
        raise ConfigError(f"--columns is for format table; format {fmt} knows its columns")
    try:
        return LogSpec(fmt, parse_columns(columns) if columns else None, parse_types(types) if types else {}, time_unit)
    except DataError as exc:
        raise ConfigError(str(exc)) from None


class PrequentialSettings(TrainingSettings):
    """``attnrec train``'s settings plus the prequential run's."""

    sections: ClassVar[dict[str, str]] = {"preq_start": "Prequential evaluation (`attnrec prequential`)"}

    preq_start: str | None = Field(None, description="ATTNREC_PREQ_START: where evaluation starts: an ISO 8601 time (UTC unless it says) or a duration after the log's first event (4d); the methods are first fitted on the events before it")
    preq_every: str = Field("1d", description="ATTNREC_PREQ_EVERY: retrain every this much event time (30m, 6h, 1d), as the periodic trainer would")
    preq_end: str | None = Field(None, description="ATTNREC_PREQ_END: evaluate next events before this time (unset: to the end of the log)")
    preq_test_from: str | None = Field(None, description="ATTNREC_PREQ_TEST_FROM: next events from this time on are reported as test, earlier ones as validation (choose defaults on validation only); unset: one split, all")
    preq_methods: str = Field("popular,trending,vsknn,vmis,gru4rec,attention-frozen,attention", description="ATTNREC_PREQ_METHODS: comma-separated: popular, trending, vsknn, vmis, gru4rec, attention-frozen (trained once, on the events before START), attention (retrained every EVERY, warm-started, through the promotion gate)")
    preq_epochs: int = Field(30, ge=1, description="ATTNREC_PREQ_EPOCHS: the most epochs of each retrain (patience a third of them), as ATTNREC_TRAINER_EPOCHS")
    preq_holdout: float = Field(0.0, ge=0, lt=1, description="ATTNREC_PREQ_HOLDOUT: each retrain validates on the last event of this share of the users, as ATTNREC_TRAINER_HOLDOUT (0: leave-one-out)")
    preq_margin: float = Field(0.02, ge=0, lt=1, description="ATTNREC_PREQ_MARGIN: the promotion gate's margin for the retrained attention model, as ATTNREC_MARGIN")
    preq_exclude_window: int = Field(50, ge=1, description="ATTNREC_PREQ_EXCLUDE_WINDOW: with seen items excluded, the items of the user's newest N events are (the worker's EXCLUDE_WINDOW)")
    preq_trending_window_s: float = Field(1800.0, gt=0, description="ATTNREC_PREQ_TRENDING_WINDOW_S: trending now's window (the worker's TRENDING_WINDOW_S)")
    preq_trending_weights: str | None = Field(None, description="ATTNREC_PREQ_TRENDING_WEIGHTS: trending's weight per event type, TYPE=W,... (unset: the worker's: purchase, gift 3, cart 2, like, share 1.5, view, click 1)")
    preq_knn_k: int = Field(100, ge=1, description="ATTNREC_PREQ_KNN_K: neighbours of the session kNN methods")
    preq_knn_sample: int = Field(500, ge=1, description="ATTNREC_PREQ_KNN_SAMPLE: the most recent sessions per item the session kNN methods consider")
    preq_per: Literal["auto", "day", "hour"] = Field("auto", description="ATTNREC_PREQ_PER: figures per day or per hour of the next event (auto: per day when the evaluation spans over two days)")
    preq_resamples: int = Field(1000, ge=10, description="ATTNREC_PREQ_RESAMPLES: bootstrap resamples of the users for the 95 % intervals")
    preq_reference: str = Field("attention", description="ATTNREC_PREQ_REFERENCE: the method the others' paired differences are taken against")
    preq_json: Path | None = Field(None, description="ATTNREC_PREQ_JSON: write the run's figures (JSON) here")
    preq_plot: Path | None = Field(None, description="ATTNREC_PREQ_PLOT: draw HR@10 and MRR@20 per period of every method (PNG) here")
