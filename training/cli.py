"""``attnrec train`` and ``attnrec eval``: the commands over the training pipeline.

Importing this module does not import torch: the commands import it when they run. Options
come from :class:`attnrec.training.settings.TrainingSettings` (``ATTNREC_DATA``,
``ATTNREC_TRAIN_*``, ``ATTNREC_EVAL_*``; flags in ``attnrec train --help``). Model and training
options left unset are chosen from the data (``attnrec.training.defaults.default_configs``).

    attnrec train --data PATH --format s3|gsasrec|events --out DIR [--items FILE]   (item content: training/content.py)
    attnrec eval  --model DIR --data PATH --format ... --json FILE
    attnrec eval  --baseline popular|sasrec-bce|gru4rec|meanpool --data PATH --format ... --json FILE
    attnrec eval  --train [--noise P] [--keep-history] --data PATH --format ... --json FILE
    attnrec eval  --compare A B [--split val]      (saved results, paired on users: training/compare.py)
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from attnrec.errors import ConfigError

from .config import ModelConfig
from .settings import OPTIONS, TrainingSettings, log_spec

__all__ = ["configs", "train_checkpoint", "cmd_train", "cmd_eval"]

log = logging.getLogger(__name__)

def configs(s: TrainingSettings, ds: Any, *, loss: str | None = None, baseline: bool = False) -> tuple[Any, Any]:
    """The data's default configurations with every training option the settings set applied on
    top (``loss``: the loss when the settings leave it unset). A ``baseline`` trains without the
    attention model's denoising default unless ``ATTNREC_TRAIN_DENOISE`` is set: it teaches
    attention where not to look, and the baselines keep their published recipes."""
    from .defaults import default_configs, ema_decay

    mcfg, tcfg = default_configs(ds)
    if baseline:
        tcfg.denoise = 0.0
    if loss is not None and s.train_loss is None:
        tcfg.loss = loss
    for cls, name, setting, _, _ in OPTIONS:
        if getattr(s, setting) is not None:
            setattr(mcfg if cls is ModelConfig else tcfg, name, getattr(s, setting))
    if s.train_no_types:
        mcfg.n_event_types = 0
    if s.train_no_gaps:
        mcfg.n_gap_buckets = 0
    if s.train_ema is None and tcfg.ema:  # the horizon in epochs of the rows and batches as set
        tcfg.ema = ema_decay(ds, mcfg, tcfg)
    try:
        mcfg.__post_init__()
        tcfg.__post_init__()
    except AssertionError as exc:
        raise ConfigError(f"inconsistent training settings: {exc}") from None
    return mcfg, tcfg


def _dataset(s: TrainingSettings, vocab: Any = None) -> Any:
    from .data import load_dataset

    if s.data is None:
        raise ConfigError("--data is required (or set ATTNREC_DATA)")
    ds = load_dataset(s.data, s.data_format, vocab, spec=log_spec(s.data_format, s.data_columns, s.data_types, s.data_time_unit),
                      min_item_support=s.data_min_item_support)
    _report_sparsity(ds)
    return ds


def _report_sparsity(ds: Any) -> None:
    """Say how sparse the data is, and what to do about it when most items have one event."""
    sp = ds.sparsity
    if not sp:
        return
    log.info("%s: %d items, %d of them (%.0f %%) with one event, median %g events per item", ds.name, sp["items_seen"],
             sp["items_one_event"], 100 * sp["share_items_one_event"], sp["median_events_per_item"])
    if sp["share_items_one_event"] >= 0.3 and sp["min_item_support"] <= 1:
        log.warning("%s: %.0f %% of the items have a single event; the model cannot learn them. "
                    "--min-item-support 2 (or more) keeps them out of the vocabulary", ds.name, 100 * sp["share_items_one_event"])


def _fit(s: TrainingSettings, ds: Any, loss: str | None = None, baseline: bool = False) -> tuple[Any, Any, dict[str, Any]]:
    """Train with the data defaults and the settings; returns (model, tcfg, metrics)."""
    from .train import fit_and_evaluate

    mcfg, tcfg = configs(s, ds, loss=loss, baseline=baseline)
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


def train_checkpoint(s: TrainingSettings) -> tuple[Path, dict[str, Any]]:
    """Load ``ATTNREC_DATA``, train, evaluate and write the checkpoint to ``ATTNREC_TRAIN_OUT``;
    returns its path and metrics (the demo trains through this too)."""
    import torch

    from .checkpoint import save_checkpoint

    if s.train_out is None:
        raise ConfigError("--out is required (or set ATTNREC_TRAIN_OUT)")
    torch.set_num_threads(s.train_threads)
    ds = _dataset(s)
    if s.train_items is not None:  # item content: attributes and titles, cold items appended
        from .content import attach_content, load_item_attributes

        attach_content(ds, load_item_attributes(s.train_items))
    elif s.train_id_dropout is not None:
        raise ConfigError("ATTNREC_TRAIN_ID_DROPOUT needs item content: set --items FILE (ATTNREC_TRAIN_ITEMS)")
    model, tcfg, metrics = _fit(s, ds)
    save_checkpoint(s.train_out, model, tcfg, ds, metrics)
    return Path(s.train_out), metrics


def cmd_train(s: TrainingSettings, args: Any) -> int:
    """``attnrec train``: prints a one-line JSON summary."""
    _sigterm_stops_training()
    out, metrics = train_checkpoint(s)
    summary = {"out": str(out), "dataset": metrics["dataset"], "best_epoch": metrics["best_epoch"],
               "train_seconds": metrics["train_seconds"], "train_cpu_seconds": metrics["train_cpu_seconds"],
               "val": metrics["val"], "test": metrics["test"], "data": metrics.get("data")}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _metrics(m: dict[str, Any]) -> dict[str, float]:
    return {k: m[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10")}


def _eval_mode(s: TrainingSettings) -> str:
    """What ``attnrec eval`` evaluates: "model" (a checkpoint), "train" or a baseline's name."""
    modes = [m for m, on in (("model", s.eval_model is not None), ("train", s.eval_train),
                             ("baseline", s.eval_baseline is not None)) if on]
    if not modes and s.eval_compare:
        if len(s.eval_compare) != 2:
            raise ConfigError(f"--compare alone compares two sides A B, got {len(s.eval_compare)}")
        return "compare"
    if not modes:
        raise ConfigError("--model DIR, --train or --baseline is required "
                          "(or set ATTNREC_EVAL_MODEL / ATTNREC_EVAL_TRAIN / ATTNREC_EVAL_BASELINE)")
    if len(modes) > 1:
        raise ConfigError(f"--model, --train and --baseline exclude each other (got {' and '.join('--' + m for m in modes)})")
    if s.eval_noise and modes[0] == "model":
        raise ConfigError(f"ATTNREC_EVAL_NOISE={s.eval_noise:g} trains on noisy data: use it with --train or --baseline, "
                          "not with --model (a checkpoint trained elsewhere)")
    return s.eval_baseline or modes[0]


def _fit_here(s: TrainingSettings, ds: Any, mode: str) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """Train ``mode`` (train, sasrec-bce, gru4rec, meanpool) on ``ds``; (model, config, metrics)."""
    if mode in ("gru4rec", "meanpool"):
        from .baselines import fit_baseline

        mcfg, tcfg = configs(s, ds, baseline=True)
        model, metrics = fit_baseline(ds, mode, mcfg, tcfg, progress=not s.quiet)
        mdict = metrics["model"]
    else:
        model, tcfg, metrics = _fit(s, ds, loss="bce" if mode == "sasrec-bce" else None, baseline=mode != "train")
        mdict = model.cfg.to_dict()
    config = {"model": mdict, "train": tcfg.to_dict(), "best_epoch": metrics["best_epoch"],
              "epochs_run": metrics["epochs_run"], "stop_reason": metrics["stop_reason"],
              "train_cpu_seconds": metrics["train_cpu_seconds"], "val": _metrics(metrics["val"]),
              "curve": [{k: r[k] for k in ("epoch", "val_ndcg@10", "elapsed_seconds", "epoch_cpu_seconds")} for r in metrics["curve"]]}
    config = ({"baseline": mode, "evaluation_only": True, "exported": False, **config} if mode != "train"
              else {"trained_here": True, "exported": False, **config})
    return model, config, metrics


def cmd_eval(s: TrainingSettings, args: Any) -> int:
    """``attnrec eval``: the result JSON on stdout, and in ``ATTNREC_EVAL_JSON`` unless ``-``.

    Evaluates a checkpoint (``--model``), or trains here and evaluates the attention model
    (``--train``) or a baseline (``--baseline``: popular, sasrec-bce, gru4rec, meanpool). What
    is trained here is evaluation only: nothing is exported. ``--noise P`` trains and evaluates
    on data with a share P of random items inserted (training/noise.py); ``--keep-history``
    leaves the user's input items in the ranking (training/evaluate.py). Every metric comes
    with its 95 % bootstrap interval over users, and the file keeps the per-user ranks
    (``per_user``); ``--compare`` pairs this result with saved ones, or alone two saved sides
    (training/compare.py)."""
    import torch

    from .data import Vocab
    from .evaluate import evaluate, model_scorer, popularity_scorer, protocol
    from .stats import METHOD
    from .train import with_intervals

    mode = _eval_mode(s)
    if mode == "compare":
        return _write_result(s, _compare(s, *s.eval_compare))
    if mode not in ("model", "popular"):
        _sigterm_stops_training()  # as attnrec train: the best epoch so far is evaluated
    torch.set_num_threads(s.train_threads)
    t0 = time.monotonic()
    keep = s.eval_keep_history
    config: dict[str, Any]
    noise: dict[str, Any] | None = None
    splits: dict[str, Any] | None = None
    train_cpu = 0.0
    if mode == "model":
        from .checkpoint import load_checkpoint

        model, config, vocab = load_checkpoint(s.eval_model)
        ds = _dataset(s, Vocab.from_dict(vocab))
        if config.get("data_fingerprint") and config["data_fingerprint"] != ds.fingerprint:
            log.warning("evaluating on data that differs from the training data (fingerprint mismatch)")
        res = evaluate(model_scorer(model), ds, s.eval_split, model.cfg.history_len, seed=s.train_seed,
                       keep_history=keep, return_ranks=True)
        train_seconds, model_name = _train_seconds(s.eval_model), str(s.eval_model)
    else:
        ds = _dataset(s)
        info = None
        if s.eval_noise:
            from .noise import inject_noise

            ds, info = inject_noise(ds, s.eval_noise, s.train_seed)
            noise = info.summary(ds)
        model_name = "attention model, trained here" if mode == "train" else f"baseline:{mode}"
        if mode == "popular":
            res = evaluate(popularity_scorer(ds), ds, s.eval_split, 50, seed=s.train_seed, keep_history=keep,
                           return_ranks=True)
            train_seconds, config = 0.0, {"baseline": "popular"}
        else:
            model, config, metrics = _fit_here(s, ds, mode)
            train_seconds, train_cpu = metrics["train_seconds"], metrics["train_cpu_seconds"]
            res = {**metrics[s.eval_split], **metrics["per_user"][s.eval_split]}
            # trained here: both splits (the validation figures choose, the test figures report)
            splits = {k: {"metrics": _metrics(metrics[k]), "intervals": metrics[k]["intervals"],
                          "per_user": metrics["per_user"][k]} for k in ("val", "test")}
            if keep:  # early stopping validated as always (history excluded); the report keeps it
                res = evaluate(model_scorer(model), ds, s.eval_split, model.cfg.history_len, seed=s.train_seed,
                               keep_history=True, return_ranks=True)
            if info is not None and mode in ("train", "sasrec-bce"):
                from .attention import noise_attention

                noise["attention"] = noise_attention(model, ds, info, s.eval_split)  # type: ignore[index]
    detail = protocol(keep)
    res, per_user = with_intervals(res)
    out = {"dataset": ds.name, "protocol": detail["name"], "protocol_detail": detail, "split": s.eval_split,
           "users": res["users"], "items": len(ds.vocab.items), "metrics": _metrics(res),
           "intervals": res["intervals"], "interval_method": METHOD,
           "train_seconds": train_seconds, "train_cpu_seconds": train_cpu, "threads": s.train_threads,
           "seed": s.train_seed, "eval_seconds": round(time.monotonic() - t0, 1), "config": config,
           "model": model_name, "noise": noise, "data_fingerprint": ds.fingerprint}
    if s.eval_compare:  # this result (a) against each saved one (b), paired on the users
        from .compare import Result, compare_results, load_result, parse_side

        here = Result(model_name, s.eval_split, detail["name"], ds.name, per_user["user_ids"], per_user["ranks"])
        out["comparisons"] = [compare_results([here], [load_result(x, s.eval_split) for x in parse_side(side)])
                              for side in s.eval_compare]
    out["per_user"] = per_user
    if splits is not None and not keep:
        out["all_splits"] = splits
    return _write_result(s, out)


def _compare(s: TrainingSettings, a: str, b: str) -> dict[str, Any]:
    """``attnrec eval --compare A B``: saved results compared, nothing evaluated."""
    from .compare import compare_files, parse_side

    return compare_files(parse_side(a), parse_side(b), s.eval_split)


def _write_result(s: TrainingSettings, out: dict[str, Any]) -> int:
    """The result JSON to ``ATTNREC_EVAL_JSON`` (unless ``-``); on stdout without the per-user
    ranks (thousands of numbers), which the file keeps."""
    if s.eval_json and s.eval_json != "-":
        with open(s.eval_json, "w") as f:
            f.write(json.dumps(out, indent=1) + "\n")
    shown = {k: v for k, v in out.items() if k != "per_user"}
    if "all_splits" in shown:
        shown["all_splits"] = {k: {m: v for m, v in sp.items() if m != "per_user"} for k, sp in shown["all_splits"].items()}
    sys.stdout.write(json.dumps(shown, indent=1) + "\n")
    return 0


def _train_seconds(model_dir: Path) -> float:
    try:
        return float(json.loads((Path(model_dir) / "metrics.json").read_text()).get("train_seconds", 0.0))
    except (OSError, ValueError):
        return 0.0
