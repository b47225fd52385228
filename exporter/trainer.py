"""Periodic trainer: archive ``clicks`` -> retrain -> evaluate -> export -> gated promote.

    attnrec trainer --every 10m [--once] [--events-dir DIR] [--min-new-events 100]

One cycle:

1. **Archive.** A kafka-python consumer in group ``attnrec-trainer`` reads what is new on
   ``clicks`` (until the topic is drained or ``--max-events``), validates each message with
   the shared schema (invalid ones are counted and skipped; the worker dead-letters them),
   writes the valid events as one JSONL file under the event log (``--events-dir``, default
   ``$ATTNREC_HOME/events``): temp file, fsync, rename, fsync the directory -- and only then
   commits the consumer offsets. A crash between the two re-archives the same events next
   time; the training loader drops duplicates by event_id, so nothing is lost or counted twice.
2. **Retrain** when at least ``--min-new-events`` events arrived since the last training
   (or there is no model yet), on the whole event log with the ``events`` loader. The item
   vocabulary is the current model's, grown by appending new items, so old items keep their
   indices, and the model is warm-started from the current one through
   ``training.train.train(init_state=...)`` (old rows copied into the grown item table, new
   items' rows start fresh). With no current model (or its checkpoint directory gone) it
   trains from scratch; the cycle summary says which (``warm_start``).
3. **Evaluate** (leave-one-out full ranking, validation and test), write a checkpoint under
   ``$ATTNREC_HOME/trainer/ckpt-<time>``.
4. **Export and promote** through :func:`exporter.export.export_checkpoint` with
   ``promote=True``: parity gate, load checks, NDCG@10 gate with ``--margin`` (or ``--force``).

Each cycle's summary is logged and appended to ``$ATTNREC_HOME/trainer/cycles.jsonl``.
SIGTERM/SIGINT stop the loop between cycles (an archive in progress finishes first).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import inspect
import json
import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnrec.errors import ConfigError, DataError, InvalidEventError, TransientError
from attnrec.settings import env_default
from exporter.registry import fsync_dir

__all__ = [
    "parse_duration",
    "TrainerConfig",
    "write_event_file",
    "archive_from_kafka",
    "retrain",
    "run_cycle",
    "run_loop",
    "add_trainer_arguments",
    "run_from_args",
]

log = logging.getLogger(__name__)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_duration(text: str | float) -> float:
    """'10m' -> 600.0; '30s', '1.5h', '250ms', '2d' and bare seconds work too."""
    if isinstance(text, (int, float)):
        return float(text)
    m = _DURATION.match(text)
    if not m:
        raise ConfigError(f"cannot read duration {text!r}; use e.g. 30s, 10m, 1h")
    value, unit = float(m.group(1)), m.group(2) or "s"
    return value * {"ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}[unit]


@dataclass
class TrainerConfig:
    registry: Path
    home: Path = Path(".attnrec")
    events_dir: Path | None = None  # default home/events
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "clicks"
    group_id: str = "attnrec-trainer"
    every_s: float = 600.0
    min_new_events: int = 100
    max_events: int = 1_000_000  # per archive pass
    epochs: int = 30
    max_minutes: float = 5.0
    threads: int = 1  # the trainer shares the box with the worker
    margin: float = 0.02
    force: bool = False
    top_k: int = 10
    kafka_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def event_log(self) -> Path:
        return self.events_dir if self.events_dir is not None else self.home / "events"

    @property
    def work_dir(self) -> Path:
        return self.home / "trainer"


# --- 1. archive ---------------------------------------------------------------------------------
def write_event_file(events_dir: Path, lines: Iterable[bytes]) -> Path | None:
    """Durably write JSONL lines as a new event-log file; returns its path (None if no lines).

    Temp file -> fsync -> rename -> fsync dir: once this returns the file survives a crash,
    and a reader never sees a partial file (temp names do not end in .jsonl).
    """
    events_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    final = events_dir / f"clicks-{stamp}.jsonl"
    tmp = events_dir / f".clicks-{stamp}.jsonl.tmp"
    n = 0
    with open(tmp, "wb") as f:
        for line in lines:
            f.write(line.rstrip(b"\n") + b"\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    if n == 0:
        tmp.unlink()
        return None
    os.rename(tmp, final)
    fsync_dir(events_dir)
    return final


def archive_from_kafka(cfg: TrainerConfig, *, idle_s: float = 2.0, join_timeout_s: float = 60.0) -> dict[str, Any]:
    """Drain new ``clicks`` into the event log; commit offsets only after the file is durable."""
    import orjson
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from stream.schema import parse_event

    t0 = time.monotonic()
    try:
        consumer = KafkaConsumer(
            cfg.topic, bootstrap_servers=cfg.bootstrap.split(","), group_id=cfg.group_id,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000,
            **cfg.kafka_kwargs,
        )
    except KafkaError as exc:
        raise TransientError(f"cannot reach Kafka at {cfg.bootstrap}: {exc}") from None
    lines: list[bytes] = []
    invalid = 0
    try:
        idle_since: float | None = None  # set once partitions are assigned
        while len(lines) < cfg.max_events:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            records = [r for part in batch.values() for r in part]
            if not records:
                # the first polls join the group; the idle clock starts once partitions are ours
                if idle_since is None and consumer.assignment():
                    idle_since = time.monotonic()
                if idle_since is not None and time.monotonic() - idle_since >= idle_s:
                    break
                if idle_since is None and time.monotonic() - t0 > join_timeout_s:
                    raise TransientError(f"no partitions of {cfg.topic} assigned within {join_timeout_s:.0f}s")
                continue
            idle_since = time.monotonic()
            for rec in records:
                try:
                    ev = parse_event(rec.value)
                except InvalidEventError as exc:
                    invalid += 1
                    log.debug("skipping invalid message %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc)
                    continue
                lines.append(orjson.dumps(ev.to_dict()))
        path = write_event_file(cfg.event_log, lines)
        if lines or invalid:
            consumer.commit()  # only now: the events are on disk
    except KafkaError as exc:
        raise TransientError(f"archiving {cfg.topic} failed: {exc}") from None
    finally:
        consumer.close(autocommit=False)
    summary = {"archived": len(lines), "invalid": invalid, "file": str(path) if path else None,
               "seconds": round(time.monotonic() - t0, 2)}
    log.info("archived %d events (%d invalid skipped) from %s into %s", len(lines), invalid, cfg.topic,
             path or "nothing")
    return summary


# --- 2-3. retrain -------------------------------------------------------------------------------
def _current_checkpoint(cfg: TrainerConfig) -> tuple[str | None, Path | None]:
    from exporter.registry import Registry

    reg = Registry(cfg.registry)
    current = reg.current_version()
    if current is None:
        return None, None
    ckpt = reg.read_manifest(current).get("checkpoint")
    path = Path(ckpt) if ckpt else None
    return current, path if path is not None and (path / "model.pt").is_file() else None


def _grown_vocab(old_vocab: dict[str, Any] | None, events_dir: Path) -> Any:
    """The old vocabulary with every new item of the event log appended (old indices kept)."""
    from training.data import Vocab, read_events

    if old_vocab is None:
        return None
    old = Vocab.from_dict(old_vocab)
    known = set(old.items)
    new: dict[str, None] = {}
    for ev in read_events(events_dir):
        if ev.item_id not in known:
            new.setdefault(ev.item_id, None)
    return Vocab(list(old.items) + list(new), list(old.event_types))


def _warm_state(old_state: dict[str, Any], model: Any) -> dict[str, Any]:
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


def retrain(cfg: TrainerConfig) -> dict[str, Any]:
    """Train on the whole event log; returns {"checkpoint", "warm_start", "val_ndcg@10", ...}."""
    from training.checkpoint import load_checkpoint, save_checkpoint
    from training.data import load_dataset
    from training.evaluate import PROTOCOL, evaluate, model_scorer
    from training.model import AttnRec
    from training.train import default_configs, train

    current, ckpt_path = _current_checkpoint(cfg)
    old_model = old_cfg = old_vocab = None
    if ckpt_path is not None:
        old_model, old_cfg, old_vocab = load_checkpoint(ckpt_path)
    vocab = _grown_vocab(old_vocab, cfg.event_log)
    ds = load_dataset(cfg.event_log, "events", vocab)
    mcfg, tcfg = default_configs(ds)
    if old_cfg is not None:  # keep the architecture; only the vocabulary grows
        from training.model import ModelConfig

        mcfg = ModelConfig.from_dict({**old_cfg["model"], "n_items": ds.vocab.n_items})
    tcfg.epochs, tcfg.max_minutes, tcfg.threads = cfg.epochs, cfg.max_minutes, cfg.threads
    tcfg.patience = min(tcfg.patience, max(2, cfg.epochs // 3))
    kwargs: dict[str, Any] = {}
    warm = False
    if old_model is not None:
        params = inspect.signature(train).parameters
        init_key = next((k for k in ("init_state", "init", "warm_start") if k in params), None)
        if init_key is not None:
            kwargs[init_key] = _warm_state(old_model.state_dict(), AttnRec(mcfg))
            warm = True
    t0 = time.monotonic()
    model, info = train(ds, mcfg, tcfg, **kwargs)
    scorer = model_scorer(model)
    val = evaluate(scorer, ds, "val", mcfg.max_len, seed=tcfg.seed)
    test = evaluate(scorer, ds, "test", mcfg.max_len, seed=tcfg.seed)
    metrics = {"protocol": PROTOCOL, "dataset": ds.name, "best_epoch": info["best_epoch"],
               "epochs_run": info["epochs_run"], "stop_reason": info["stop_reason"],
               "train_seconds": info["train_seconds"], "val": val, "test": test, "data": ds.stats(),
               "curve": info["curve"], "warm_start": warm, "parent_version": current}
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    out = save_checkpoint(cfg.work_dir / f"ckpt-{stamp}", model, tcfg, ds, metrics)
    return {"checkpoint": str(out), "warm_start": warm, "items": ds.vocab.n_items - 2,
            "users": len(ds.users), "val_ndcg@10": val["ndcg@10"], "test_ndcg@10": test["ndcg@10"],
            "train_seconds": round(time.monotonic() - t0, 1)}


# --- 4. the cycle and the loop ------------------------------------------------------------------
def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _state(cfg: TrainerConfig) -> dict[str, Any]:
    path = cfg.work_dir / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"trained_files": []}


def _save_state(cfg: TrainerConfig, state: dict[str, Any]) -> None:
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    tmp = cfg.work_dir / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, cfg.work_dir / "state.json")


def run_cycle(cfg: TrainerConfig, *, archive: bool = True) -> dict[str, Any]:
    """One archive -> retrain -> export -> gated promote pass; returns its summary."""
    from exporter.export import export_checkpoint
    from exporter.registry import Registry

    summary: dict[str, Any] = {"started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if archive:
        summary["archive"] = archive_from_kafka(cfg)
    state = _state(cfg)
    files = sorted(p.name for p in cfg.event_log.glob("*.jsonl")) if cfg.event_log.is_dir() else []
    new_files = [f for f in files if f not in set(state["trained_files"])]
    new_events = sum(_count_lines(cfg.event_log / f) for f in new_files)
    reg = Registry(cfg.registry)
    summary["new_events"] = new_events
    if not files or (new_events < cfg.min_new_events and reg.current_version() is not None):
        summary["decision"] = "skipped"
        summary["reason"] = f"{new_events} new events < --min-new-events {cfg.min_new_events}"
        log.info("trainer: %s", summary["reason"])
    else:
        try:
            summary["train"] = retrain(cfg)
        except DataError as exc:
            summary["decision"], summary["reason"] = "skipped", f"no trainable data: {exc}"
            log.warning("trainer: %s", summary["reason"])
        else:
            version = export_checkpoint(summary["train"]["checkpoint"], cfg.registry, promote=True,
                                        force=cfg.force, margin=cfg.margin, top_k=cfg.top_k)
            last = reg.history()[-1]
            summary.update(version=version, decision=last["decision"], reason=last["reason"],
                           figures=last.get("figures"), current=reg.current_version())
            state["trained_files"] = files
            _save_state(cfg, state)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    with open(cfg.work_dir / "cycles.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    log.info("trainer cycle: %s", json.dumps({k: v for k, v in summary.items() if k != "figures"}))
    return summary


def run_loop(cfg: TrainerConfig, *, stop: threading.Event | None = None, once: bool = False) -> int:
    """Cycle every ``cfg.every_s`` until ``stop`` is set (SIGTERM/SIGINT set it from the CLI)."""
    stop = stop or threading.Event()
    failures = 0
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            run_cycle(cfg)
            failures = 0
        except TransientError as exc:
            failures += 1
            log.warning("trainer cycle failed (%s); retrying next cycle", exc)
        except Exception:
            if once:
                raise
            failures += 1
            log.exception("trainer cycle failed; the registry is unchanged, retrying next cycle")
        if once:
            return 0 if failures == 0 else 1
        stop.wait(max(0.0, cfg.every_s - (time.monotonic() - t0)))
    return 0


# --- command line -------------------------------------------------------------------------------
def add_trainer_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``attnrec trainer`` (registry/margin/force are added by exporter.cli)."""
    p.add_argument("--every", default=env_default("every", "10m"), help="cycle period, e.g. 30s, 10m (env ATTNREC_EVERY)")
    p.add_argument("--once", action="store_true", default=env_default("once", False), help="run one cycle and exit")
    p.add_argument("--home", type=Path, default=Path(env_default("home", ".attnrec")), help="data dir (env ATTNREC_HOME)")
    p.add_argument("--events-dir", type=Path, default=env_default("events-dir", None) and Path(env_default("events-dir", "")),
                   help="event log directory (env ATTNREC_EVENTS_DIR; default HOME/events)")
    p.add_argument("--kafka-bootstrap", default=env_default("kafka-bootstrap", "127.0.0.1:9092"),
                   help="host:port[,host:port] (env ATTNREC_KAFKA_BOOTSTRAP)")
    p.add_argument("--clicks-topic", default=env_default("clicks-topic", "clicks"), help="env ATTNREC_CLICKS_TOPIC")
    p.add_argument("--trainer-group", default=env_default("trainer-group", "attnrec-trainer"),
                   help="consumer group of the archiver (env ATTNREC_TRAINER_GROUP)")
    p.add_argument("--min-new-events", type=int, default=env_default("min-new-events", 100),
                   help="retrain only after this many new events (env ATTNREC_MIN_NEW_EVENTS)")
    p.add_argument("--epochs", type=int, default=env_default("epochs", 30), help="max epochs per retrain (env ATTNREC_EPOCHS)")
    p.add_argument("--max-minutes", type=float, default=env_default("max-minutes", 5.0),
                   help="training time budget per cycle (env ATTNREC_MAX_MINUTES)")
    p.add_argument("--threads", type=int, default=env_default("threads", 1), help="torch threads (env ATTNREC_THREADS)")
    p.add_argument("--top-k", type=int, default=env_default("top-k", 10), help="env ATTNREC_TOP_K")


def run_from_args(args: argparse.Namespace) -> int:
    from attnrec.settings import load_settings

    settings = load_settings(kafka_bootstrap=args.kafka_bootstrap)
    cfg = TrainerConfig(
        registry=args.registry, home=args.home, events_dir=args.events_dir, bootstrap=args.kafka_bootstrap,
        topic=args.clicks_topic, group_id=args.trainer_group, every_s=parse_duration(args.every),
        min_new_events=args.min_new_events, epochs=args.epochs, max_minutes=args.max_minutes,
        threads=args.threads, margin=args.margin, force=args.force, top_k=args.top_k,
        kafka_kwargs=settings.kafka_client_kwargs(),
    )
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("trainer: every %.0fs, event log %s, registry %s", cfg.every_s, cfg.event_log, cfg.registry)
    return run_loop(cfg, stop=stop, once=args.once)
