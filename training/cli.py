"""``attnrec train`` and ``attnrec eval`` sub-commands.

Importing this module does not import torch: the handlers import it when they run. Every flag's
default can come from the environment as ``ATTNREC_<FLAG>`` (``--max-len`` -> ``ATTNREC_MAX_LEN``).
Model/training flags left unset are chosen from the data (``training.train.default_configs``).

    attnrec train --data PATH --format s3|gsasrec|events --out DIR
    attnrec eval  --model DIR --data PATH --format ... --json FILE
    attnrec eval  --baseline popular|sasrec-bce --data PATH --format ... --json FILE
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any

__all__ = ["add_train_parser", "add_eval_parser", "run_train", "run_eval"]

log = logging.getLogger(__name__)

FORMATS = ("s3", "gsasrec", "events")  # = training.data.FORMATS, repeated to keep torch out


def _env(flag: str, default: Any = None) -> Any:
    """Default of ``--flag``: env ATTNREC_FLAG if set (argparse applies ``type`` to it)."""
    return os.environ.get("ATTNREC_" + flag.lstrip("-").replace("-", "_").upper(), default)


def _add(p: argparse.ArgumentParser, flag: str, help: str, default: Any = None, **kw: Any) -> None:
    env = "ATTNREC_" + flag.lstrip("-").replace("-", "_").upper()
    shown = "chosen from the data" if default is None else default
    p.add_argument(flag, default=_env(flag, default), help=f"{help} (env {env}; default: {shown})", **kw)


def _add_data_flags(p: argparse.ArgumentParser, required_data: bool = True) -> None:
    _add(p, "--data", "dataset path: file, or directory for gsasrec / a directory of *.jsonl events")
    _add(p, "--format", "data format", default="events", choices=FORMATS)
    _add(p, "--threads", "torch intra-op threads", default=2, type=int)
    _add(p, "--seed", "random seed", default=42, type=int)


def _add_model_flags(p: argparse.ArgumentParser) -> None:
    _add(p, "--max-len", "sequence length L", type=int)
    _add(p, "--d-model", "embedding width", type=int)
    _add(p, "--blocks", "transformer blocks", type=int)
    _add(p, "--heads", "attention heads", type=int)
    _add(p, "--dropout", "dropout", type=float)
    _add(p, "--block", "transformer block layout", choices=("pre_ln", "sasrec"))
    _add(p, "--epochs", "max epochs", type=int)
    _add(p, "--patience", "early-stopping patience (epochs without validation NDCG@10 gain)", type=int)
    _add(p, "--batch-size", "batch size", type=int)
    _add(p, "--lr", "Adam learning rate", type=float)
    _add(p, "--lr-decay", "multiply the learning rate by this after --lr-patience epochs without a validation gain "
         "(1 = constant)", type=float)
    _add(p, "--lr-patience", "epochs without a validation gain before each learning-rate decay", type=int)
    _add(p, "--output-dropout", "dropout on the item embeddings when they score (the output layer), training only",
         type=float)
    _add(p, "--ema", "validate and keep an exponential moving average of the weights, decay per step (0 = off)",
         type=float)
    _add(p, "--weight-decay", "Adam weight decay", type=float)
    _add(p, "--label-smoothing", "--loss ce: label smoothing, the share of the target's weight spread over all items (0 = off)", type=float)
    _add(p, "--loss", "training loss: full softmax, sampled softmax, or SASRec's BCE", choices=("ce", "sampled", "bce"))
    _add(p, "--negatives", "negatives for --loss sampled", type=int)
    _add(p, "--negatives-per", "--loss sampled: draw negatives per position, per training row or per batch",
         choices=("position", "row", "batch"))
    _add(p, "--max-minutes", "wall-clock training budget in minutes (0 = none)", type=float)
    _add(p, "--bucket", "batches of rows of similar length (less padding, cheaper epochs) instead of random batches; "
         "--no-bucket for random batches", action=argparse.BooleanOptionalAction)
    _add_bool(p, "--no-types", "ignore event types even when the data has them")
    _add_bool(p, "--no-gaps", "ignore time gaps even when the data has timestamps")


def _add_bool(p: argparse.ArgumentParser, flag: str, help: str) -> None:
    env = "ATTNREC_" + flag.lstrip("-").replace("-", "_").upper()
    p.add_argument(flag, action="store_true", default=_bool(_env(flag, "0")), help=f"{help} (env {env}=1)")


def _bool(s: str | bool) -> bool:
    if isinstance(s, bool):
        return s
    return s.strip().lower() in ("1", "true", "yes", "on")


def add_train_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model", description="Train an attention model; "
                              "early stopping on validation NDCG@10; writes a checkpoint directory.")
    _add_data_flags(p)
    _add(p, "--out", "checkpoint directory to write")
    _add_model_flags(p)
    _add_bool(p, "--quiet", "no progress bar")
    p.set_defaults(func=run_train)
    return p


def add_eval_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="full-ranking evaluation", description="Leave-one-out full-ranking "
                              "evaluation of a checkpoint, or of a baseline trained/computed in the same harness.")
    _add_data_flags(p)
    _add(p, "--model", "checkpoint directory (from attnrec train)")
    _add(p, "--baseline", "evaluate a baseline instead of --model", choices=("popular", "sasrec-bce"))
    _add(p, "--split", "which split to report", default="test", choices=("test", "val"))
    _add(p, "--json", "write the result JSON to this file ('-' = stdout only)", default="-")
    _add_model_flags(p)  # used by --baseline sasrec-bce
    _add_bool(p, "--quiet", "no progress bar")
    p.set_defaults(func=run_eval)
    return p


def _configs(args: argparse.Namespace, ds: Any) -> tuple[Any, Any]:
    from .train import default_configs

    mcfg, tcfg = default_configs(ds)
    over_m = {"max_len": args.max_len, "d_model": args.d_model, "n_blocks": args.blocks, "n_heads": args.heads,
              "dropout": args.dropout, "block": args.block}
    over_t = {"epochs": args.epochs, "patience": args.patience, "batch_size": args.batch_size, "lr": args.lr,
              "lr_decay": args.lr_decay, "ema": args.ema, "output_dropout": args.output_dropout, "lr_patience": args.lr_patience,
              "weight_decay": args.weight_decay, "label_smoothing": args.label_smoothing, "loss": args.loss, "n_negatives": args.negatives,
              "negatives_per": args.negatives_per,
              "max_minutes": args.max_minutes}
    for k, v in over_m.items():
        if v is not None:
            setattr(mcfg, k, v)
    for k, v in over_t.items():
        if v is not None:
            setattr(tcfg, k, v)
    if args.bucket is not None:
        tcfg.bucket_batches = _bool(args.bucket)
    if args.no_types:
        mcfg.n_event_types = 0
    if args.no_gaps:
        mcfg.n_gap_buckets = 0
    tcfg.seed, tcfg.threads = args.seed, args.threads
    mcfg.__post_init__()
    tcfg.__post_init__()
    return mcfg, tcfg


def _require(args: argparse.Namespace, *names: str) -> None:
    from attnrec.errors import ConfigError

    for n in names:
        if not getattr(args, n):
            raise ConfigError(f"--{n.replace('_', '-')} is required (or set ATTNREC_{n.upper()})")


def _fit(args: argparse.Namespace, ds: Any, force_loss: str | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Train with data defaults + flags; returns (model, tcfg, metrics with val and test)."""
    from .evaluate import PROTOCOL, evaluate, model_scorer
    from .train import train

    if force_loss:
        args.loss = args.loss or force_loss
    mcfg, tcfg = _configs(args, ds)
    log.info("model %s", mcfg)
    log.info("train %s", tcfg)
    model, info = train(ds, mcfg, tcfg, progress=not args.quiet)
    scorer = model_scorer(model)
    t0 = time.monotonic()
    val = evaluate(scorer, ds, "val", mcfg.max_len, seed=tcfg.seed)
    test = evaluate(scorer, ds, "test", mcfg.max_len, seed=tcfg.seed)
    metrics = {"protocol": PROTOCOL, "dataset": ds.name, "best_epoch": info["best_epoch"],
               "epochs_run": info["epochs_run"], "stop_reason": info["stop_reason"],
               "train_seconds": info["train_seconds"], "train_cpu_seconds": info["train_cpu_seconds"],
               "eval_seconds": round(time.monotonic() - t0, 1),
               "val": val, "test": test, "data": ds.stats(), "curve": info["curve"]}
    return model, tcfg, metrics


def _load(args: argparse.Namespace, vocab: Any = None) -> Any:
    from .data import load_dataset

    return load_dataset(args.data, args.format, vocab)


def _sigterm_stops_training() -> None:
    """SIGTERM behaves like Ctrl-C: training stops and the best epoch so far is saved."""
    import signal
    import threading

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def run_train(args: argparse.Namespace) -> int:
    import torch

    from .checkpoint import save_checkpoint

    _require(args, "data", "out")
    _sigterm_stops_training()
    torch.set_num_threads(max(1, args.threads))
    ds = _load(args)
    model, tcfg, metrics = _fit(args, ds)
    save_checkpoint(args.out, model, tcfg, ds, metrics)
    summary = {"out": str(args.out), "dataset": ds.name, "best_epoch": metrics["best_epoch"],
               "train_seconds": metrics["train_seconds"], "train_cpu_seconds": metrics["train_cpu_seconds"],
               "val": metrics["val"], "test": metrics["test"]}
    sys.stdout.write(json.dumps(summary) + "\n")
    return 0


def _metrics(m: dict[str, Any]) -> dict[str, float]:
    return {k: m[k] for k in ("hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10")}


def run_eval(args: argparse.Namespace) -> int:
    import torch

    from .data import Vocab
    from .evaluate import PROTOCOL, evaluate, model_scorer, popularity_scorer

    _require(args, "data")
    torch.set_num_threads(max(1, args.threads))
    t0 = time.monotonic()
    config: dict[str, Any]
    if args.baseline == "popular":
        ds = _load(args)
        res = evaluate(popularity_scorer(ds), ds, args.split, 50, seed=args.seed)
        train_seconds, config, model_name = 0.0, {"baseline": "popular"}, "baseline:popular"
    elif args.baseline == "sasrec-bce":
        ds = _load(args)
        model, tcfg, metrics = _fit(args, ds, force_loss="bce")
        res = metrics[args.split]
        train_seconds, model_name = metrics["train_seconds"], "baseline:sasrec-bce"
        config = {"baseline": "sasrec-bce", "model": model.cfg.to_dict(), "train": tcfg.to_dict(),
                  "best_epoch": metrics["best_epoch"], "train_cpu_seconds": metrics["train_cpu_seconds"],
                  "val": _metrics(metrics["val"])}
    else:
        _require(args, "model")
        from .checkpoint import load_checkpoint

        model, config, vocab = load_checkpoint(args.model)
        ds = _load(args, Vocab.from_dict(vocab))
        if config.get("data_fingerprint") and config["data_fingerprint"] != ds.fingerprint:
            log.warning("evaluating on data that differs from the training data (fingerprint mismatch)")
        res = evaluate(model_scorer(model), ds, args.split, model.cfg.max_len, seed=args.seed)
        train_seconds, model_name = _train_seconds(args.model), str(args.model)
    out = {"dataset": ds.name, "protocol": PROTOCOL, "split": args.split, "users": res["users"],
           "items": len(ds.vocab.items), "metrics": _metrics(res), "train_seconds": train_seconds,
           "eval_seconds": round(time.monotonic() - t0, 1), "config": config, "model": model_name,
           "data_fingerprint": ds.fingerprint}
    text = json.dumps(out, indent=1)
    if args.json and args.json != "-":
        with open(args.json, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


def _train_seconds(model_dir: str) -> float:
    try:
        with open(os.path.join(model_dir, "metrics.json")) as f:
            return float(json.load(f).get("train_seconds", 0.0))
    except (OSError, ValueError):
        return 0.0


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m training.cli train ...``) until ``attnrec/cli.py`` wires it."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    parser = argparse.ArgumentParser(prog="attnrec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_train_parser(sub)
    add_eval_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
