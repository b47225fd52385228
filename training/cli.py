"""``attnrec train`` and ``attnrec eval``: the commands over the training pipeline.

Importing this module does not import torch: the commands import it when they run. Options
come from :class:`attnrec.settings.Settings` (``ATTNREC_DATA``, ``ATTNREC_TRAIN_*``,
``ATTNREC_EVAL_*``; flags in ``attnrec train --help``). Model and training options left unset
are chosen from the data (``training.train.default_configs``).

    attnrec train --data PATH --format s3|gsasrec|events --out DIR
    attnrec eval  --model DIR --data PATH --format ... --json FILE
    attnrec eval  --baseline popular|sasrec-bce --data PATH --format ... --json FILE
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from attnrec.errors import ConfigError
from attnrec.settings import Settings

__all__ = ["configs", "train_checkpoint", "cmd_train", "cmd_eval"]

log = logging.getLogger(__name__)

#: Settings field -> ModelConfig field, TrainConfig field (None = left to the data defaults).
_MODEL_FIELDS = {"train_max_len": "max_len", "train_d_model": "d_model", "train_blocks": "n_blocks",
                 "train_heads": "n_heads", "train_dropout": "dropout", "train_block": "block"}
_TRAIN_FIELDS = {"train_epochs": "epochs", "train_patience": "patience", "train_batch_size": "batch_size",
                 "train_lr": "lr", "train_lr_decay": "lr_decay", "train_lr_patience": "lr_patience",
                 "train_output_dropout": "output_dropout", "train_ema": "ema", "train_weight_decay": "weight_decay",
                 "train_label_smoothing": "label_smoothing", "train_loss": "loss", "train_negatives": "n_negatives",
                 "train_negatives_per": "negatives_per", "train_max_minutes": "max_minutes",
                 "train_bucket": "bucket_batches"}


def configs(s: Settings, ds: Any, *, loss: str | None = None) -> tuple[Any, Any]:
    """The data's default configurations with every ``ATTNREC_TRAIN_*`` setting that is set
    applied on top (``loss``: the loss when the settings leave it unset)."""
    from .train import default_configs

    mcfg, tcfg = default_configs(ds)
    for src, dst in _MODEL_FIELDS.items():
        if getattr(s, src) is not None:
            setattr(mcfg, dst, getattr(s, src))
    if loss is not None and s.train_loss is None:
        tcfg.loss = loss
    for src, dst in _TRAIN_FIELDS.items():
        if getattr(s, src) is not None:
            setattr(tcfg, dst, getattr(s, src))
    if s.train_no_types:
        mcfg.n_event_types = 0
    if s.train_no_gaps:
        mcfg.n_gap_buckets = 0
    tcfg.seed, tcfg.threads = s.train_seed, s.train_threads
    try:
        mcfg.__post_init__()
        tcfg.__post_init__()
    except AssertionError as exc:
        raise ConfigError(f"inconsistent training settings: {exc}") from None
    return mcfg, tcfg


def _dataset(s: Settings, vocab: Any = None) -> Any:
    from .data import load_dataset

    if s.data is None:
        raise ConfigError("--data is required (or set ATTNREC_DATA)")
    return load_dataset(s.data, s.data_format, vocab)


def _fit(s: Settings, ds: Any, loss: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train with the data defaults and the settings; returns (model, tcfg, metrics)."""
    from .train import fit_and_evaluate

    mcfg, tcfg = configs(s, ds, loss=loss)
    log.info("model %s", mcfg)
    log.info("train %s", tcfg)
    model, metrics = fit_and_evaluate(ds, mcfg, tcfg, progress=not s.quiet)
    return model, tcfg, metrics


def _sigterm_stops_training() -> None:
    """SIGTERM behaves like Ctrl-C: training stops and the best epoch so far is saved."""
    import signal
    import threading

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def train_checkpoint(s: Settings) -> tuple[Path, dict[str, Any]]:
    """Load ``ATTNREC_DATA``, train, evaluate and write the checkpoint to ``ATTNREC_TRAIN_OUT``;
    returns its path and metrics (the demo trains through this too)."""
    import torch

    from .checkpoint import save_checkpoint

    if s.train_out is None:
        raise ConfigError("--out is required (or set ATTNREC_TRAIN_OUT)")
    torch.set_num_threads(s.train_threads)
    ds = _dataset(s)
    model, tcfg, metrics = _fit(s, ds)
    save_checkpoint(s.train_out, model, tcfg, ds, metrics)
    return Path(s.train_out), metrics


def cmd_train(s: Settings, args: Any) -> int:
    """``attnrec train``: prints a one-line JSON summary."""
    _sigterm_stops_training()
    out, metrics = train_checkpoint(s)
    summary = {"out": str(out), "dataset": metrics["dataset"], "best_epoch": metrics["best_epoch"],
               "train_seconds": metrics["train_seconds"], "train_cpu_seconds": metrics["train_cpu_seconds"],
               "val": metrics["val"], "test": metrics["test"]}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _metrics(m: dict[str, Any]) -> dict[str, float]:
    return {k: m[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10")}


def cmd_eval(s: Settings, args: Any) -> int:
    """``attnrec eval``: the result JSON on stdout, and in ``ATTNREC_EVAL_JSON`` unless ``-``."""
    import torch

    from .data import Vocab
    from .evaluate import PROTOCOL, evaluate, model_scorer, popularity_scorer

    torch.set_num_threads(s.train_threads)
    t0 = time.monotonic()
    config: dict[str, Any]
    if s.eval_baseline == "popular":
        ds = _dataset(s)
        res = evaluate(popularity_scorer(ds), ds, s.eval_split, 50, seed=s.train_seed)
        train_seconds, config, model_name = 0.0, {"baseline": "popular"}, "baseline:popular"
    elif s.eval_baseline == "sasrec-bce":
        ds = _dataset(s)
        model, tcfg, metrics = _fit(s, ds, loss="bce")
        res = metrics[s.eval_split]
        train_seconds, model_name = metrics["train_seconds"], "baseline:sasrec-bce"
        config = {"baseline": "sasrec-bce", "model": model.cfg.to_dict(), "train": tcfg.to_dict(),
                  "best_epoch": metrics["best_epoch"], "train_cpu_seconds": metrics["train_cpu_seconds"],
                  "val": _metrics(metrics["val"])}
    else:
        if s.eval_model is None:
            raise ConfigError("--model DIR or --baseline is required (or set ATTNREC_EVAL_MODEL / ATTNREC_EVAL_BASELINE)")
        from .checkpoint import load_checkpoint

        model, config, vocab = load_checkpoint(s.eval_model)
        ds = _dataset(s, Vocab.from_dict(vocab))
        if config.get("data_fingerprint") and config["data_fingerprint"] != ds.fingerprint:
            log.warning("evaluating on data that differs from the training data (fingerprint mismatch)")
        res = evaluate(model_scorer(model), ds, s.eval_split, model.cfg.history_len, seed=s.train_seed)
        train_seconds, model_name = _train_seconds(s.eval_model), str(s.eval_model)
    out = {"dataset": ds.name, "protocol": PROTOCOL, "split": s.eval_split, "users": res["users"],
           "items": len(ds.vocab.items), "metrics": _metrics(res), "train_seconds": train_seconds,
           "eval_seconds": round(time.monotonic() - t0, 1), "config": config, "model": model_name,
           "data_fingerprint": ds.fingerprint}
    text = json.dumps(out, indent=1)
    if s.eval_json and s.eval_json != "-":
        with open(s.eval_json, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _train_seconds(model_dir: Path) -> float:
    try:
        return float(json.loads((Path(model_dir) / "metrics.json").read_text()).get("train_seconds", 0.0))
    except (OSError, ValueError):
        return 0.0
