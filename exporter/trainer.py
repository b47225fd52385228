"""Periodic trainer: archive ``clicks`` -> retrain -> evaluate -> export -> gated promote.

    attnrec trainer --every 10m [--once] [--events-dir DIR] [--min-new-events 100]

One cycle:

1. **Archive** what is new on ``clicks`` into the event log, durably, and only then commit the
   consumer offsets (:mod:`attnrec.exporter.archive`).
2. **Retrain** when at least ``--min-new-events`` events arrived since the last training
   (or there is no model yet), on the whole event log with the ``events`` loader, as
   :func:`attnrec.training.retrain.retrain_events` does it (the prequential evaluation runs the
   same function). The item
   vocabulary is the current model's, grown by appending new items, so old items keep their
   indices, and the model is warm-started from the current one through
   ``attnrec.training.train.train(init_state=...)`` (old rows copied into the grown item table, new
   items' rows start fresh). With no current model (or its checkpoint directory gone) it
   trains from scratch; the cycle summary says which (``warm_start``).
3. **Evaluate** (leave-one-out full ranking, validation and test), write a checkpoint under
   ``$ATTNREC_HOME/trainer/ckpt-<time>``.
4. **Export and promote** through :func:`attnrec.exporter.export.export_checkpoint` with
   ``promote=True``: parity gate, load checks, NDCG@10 gate with ``--margin`` (or ``--force``);
   with no serving model, the new one must beat the popularity fallback on validation.
   With ``TRAINER_ROLLOUT=shadow`` a new model that passes the offline gate is published and
   shadow-scored instead (the registry's ``SHADOW``; workers score it beside the serving one),
   and each later cycle first asks the online gate about it (:func:`attnrec.exporter.gate.online_decision`
   on the workers' shadow comparison, ``ONLINE_MARGIN`` over ``ONLINE_MIN_EVENTS`` next events):
   promoted or rejected once the events are there, shadowing stops either way; until then the
   cycle archives but does not retrain (a newer model would restart the count). An operator who
   stops or changes the shadow (``attnrec models shadow``) takes the decision out of its hands.
   With no serving model the first one is promoted as usual: there is nothing to compare online.

Each cycle's summary is logged and appended to ``$ATTNREC_HOME/trainer/cycles.jsonl``.
SIGTERM/SIGINT stop the loop between cycles (an archive in progress finishes first).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError, DataError, ModelError, TransientError
from attnrec.settings import parse_duration

from .archive import archive_from_kafka
from .settings import TrainerSettings

__all__ = [
    "retrain",
    "run_cycle",
    "run_loop",
    "cmd_trainer",
]

log = logging.getLogger(__name__)

#: A version's online shadow comparison (``events``, ``shadow_ndcg@10``, ``serving_ndcg@10``, ...)
#: or None; the apps layer reads it from the workers' figures in Redis.
OnlineFigures = Callable[[str], "dict[str, Any] | None"]

def _work_dir(s: TrainerSettings) -> Path:
    return s.home / "trainer"


# --- 2-3. retrain -------------------------------------------------------------------------------
def _current_checkpoint(s: TrainerSettings) -> tuple[str | None, Path | None]:
    from attnrec.registry import Registry

    reg = Registry(s.registry_dir)
    current = reg.current_version()
    if current is None:
        return None, None
    ckpt = reg.read_manifest(current).get("checkpoint")
    path = Path(ckpt) if ckpt else None
    return current, path if path is not None and (path / "model.pt").is_file() else None


def _attributes_file(ckpt_path: Path | None) -> Path | None:
    """The item attribute file a checkpoint with item content was trained with (its copy)."""
    if ckpt_path is None or not (ckpt_path / "content.json").is_file():
        return None
    name = json.loads((ckpt_path / "content.json").read_text()).get("file")
    return ckpt_path / name if name and (ckpt_path / name).is_file() else None


def retrain(s: TrainerSettings) -> dict[str, Any]:
    """Train on the whole event log (:func:`attnrec.training.retrain.retrain_events`, warm-started
    from the serving model's checkpoint when there is one); returns {"checkpoint", "warm_start",
    "val_ndcg@10", ...}."""
    from ..training.checkpoint import load_checkpoint, save_checkpoint
    from ..training.data import fingerprint
    from ..training.eventfiles import event_files, read_events
    from ..training.retrain import Previous, retrain_events

    current, ckpt_path = _current_checkpoint(s)
    previous = Previous(*load_checkpoint(ckpt_path)) if ckpt_path is not None else None
    files = event_files(s.event_log)
    t0 = time.monotonic()
    out = retrain_events(read_events(s.event_log), s.event_log.stem or s.event_log.name, previous,
                         epochs=s.trainer_epochs, threads=s.trainer_threads, max_minutes=s.trainer_max_minutes,
                         min_item_support=s.trainer_min_item_support, holdout=s.trainer_holdout,
                         attributes=_attributes_file(ckpt_path),
                         fingerprint=fingerprint(files), files=[str(p) for p in files])
    metrics = out.metrics
    metrics.update(parent_version=current)
    val, test = metrics["val"], metrics["test"]
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = save_checkpoint(_work_dir(s) / f"ckpt-{stamp}", out.model, out.tcfg, out.ds, metrics)
    return {"checkpoint": str(path), "warm_start": out.warm_start, "items": out.ds.vocab.n_items - 2,
            "users": len(out.ds.users), "val_ndcg@10": val["ndcg@10"], "test_ndcg@10": test["ndcg@10"],
            "val_popular_ndcg@10": metrics["val_popular"]["ndcg@10"], "train_seconds": round(time.monotonic() - t0, 1)}


# --- 4. the cycle and the loop ------------------------------------------------------------------
def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _state(s: TrainerSettings) -> dict[str, Any]:
    path = _work_dir(s) / "state.json"
    return json.loads(path.read_text()) if path.is_file() else {"trained_files": []}


def _save_state(s: TrainerSettings, state: dict[str, Any]) -> None:
    _work_dir(s).mkdir(parents=True, exist_ok=True)
    tmp = _work_dir(s) / "state.json.tmp"
    tmp.write_text(json.dumps(state))
    os.replace(tmp, _work_dir(s) / "state.json")


def _decide_shadowed(s: TrainerSettings, reg: Any, state: dict[str, Any], online: OnlineFigures | None,
                     summary: dict[str, Any]) -> bool:
    """``TRAINER_ROLLOUT=shadow``: the online gate on the version this trainer shadows, once its
    events are there (promoted or rejected; shadowing stops). True while it still waits."""
    from .gate import promote_gated

    mine = state.get("shadowing")
    if not mine:
        return False
    if reg.shadow_version() != mine:  # an operator stopped or replaced it: theirs to decide
        log.info("trainer: %s is no longer shadowed; leaving its roll-out to the operator", mine)
        state["shadowing"] = None
        summary["rollout"] = {"version": mine, "decision": "left to the operator"}
        return False
    fig = online(mine) if online is not None else None
    need = s.online_min_events
    if not fig or int(fig.get("events") or 0) < need:
        n = int(fig.get("events") or 0) if fig else 0
        summary["rollout"] = {"version": mine, "decision": "waiting", "events": n, "min_events": need}
        log.info("trainer: %s shadow-scored over %d of the %d next events the online gate needs", mine, n, need)
        return True
    entry = promote_gated(reg, mine, force=False, margin=s.margin, online=fig,
                          online_margin=s.online_margin if s.online_margin is not None else 0.0, online_min_events=need)
    reg.set_shadow(None, reason=f"trainer: {mine} {entry['decision']} by the online gate")
    state["shadowing"] = None
    summary["rollout"] = {"version": mine, "decision": entry["decision"], "reason": entry["reason"]}
    return False


def _shadow_new(s: TrainerSettings, reg: Any, version: str, state: dict[str, Any]) -> dict[str, Any]:
    """``TRAINER_ROLLOUT=shadow``: a new version that passes the offline gate is shadow-scored
    (the online gate decides it in a later cycle); one that fails is rejected as usual."""
    from .gate import offline_gate

    ok, reason, figures = offline_gate(reg, version, s.margin)
    if not ok:
        return reg.record(version, decision="rejected", reason=reason, figures=figures, previous=figures["current"])  # type: ignore[no-any-return]
    state["shadowing"] = version
    return reg.set_shadow(version, reason=f"trainer: {reason}; shadow-scored until the online gate decides")  # type: ignore[no-any-return]


def run_cycle(s: TrainerSettings, *, archive: bool = True, online: OnlineFigures | None = None) -> dict[str, Any]:
    """One archive -> retrain -> export -> gated promote pass; returns its summary. ``online``:
    a version's shadow comparison (``TRAINER_ROLLOUT=shadow``; ``attnrec.apps.rollout.online_figures``)."""
    from attnrec.registry import Registry

    from .export import export_checkpoint

    summary: dict[str, Any] = {"started": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")}
    if archive:
        summary["archive"] = archive_from_kafka(s)
    state = _state(s)
    files = sorted(p.name for p in s.event_log.glob("*.jsonl")) if s.event_log.is_dir() else []
    new_files = [f for f in files if f not in set(state["trained_files"])]
    new_events = sum(_count_lines(s.event_log / f) for f in new_files)
    reg = Registry(s.registry_dir)
    summary["new_events"] = new_events
    if s.trainer_rollout == "shadow" and _decide_shadowed(s, reg, state, online, summary):
        summary["decision"] = "waiting"
        summary["reason"] = f"{state['shadowing']} is shadow-scored until the online gate decides"
    elif not files or (new_events < s.min_new_events and reg.current_version() is not None):
        summary["decision"] = "skipped"
        summary["reason"] = f"{new_events} new events < --min-new-events {s.min_new_events}"
        log.info("trainer: %s", summary["reason"])
    else:
        try:
            summary["train"] = retrain(s)
        except DataError as exc:
            summary["decision"], summary["reason"] = "skipped", f"no trainable data: {exc}"
            log.warning("trainer: %s", summary["reason"])
        else:
            shadow = s.trainer_rollout == "shadow" and reg.current_version() is not None and not s.force
            version = export_checkpoint(summary["train"]["checkpoint"], s.registry_dir, promote=not shadow,
                                        force=s.force, margin=s.margin, top_k=s.top_k)
            last = _shadow_new(s, reg, version, state) if shadow else reg.history()[-1]
            summary.update(version=version, decision=last["decision"], reason=last["reason"],
                           figures=last.get("figures"), current=reg.current_version())
            state["trained_files"] = files
    if "rollout" in summary or "train" in summary:
        _save_state(s, state)
    _work_dir(s).mkdir(parents=True, exist_ok=True)
    with open(_work_dir(s) / "cycles.jsonl", "a") as f:
        f.write(json.dumps(summary) + "\n")
    log.info("trainer cycle: %s", json.dumps({k: v for k, v in summary.items() if k != "figures"}))
    return summary


def run_loop(s: TrainerSettings, *, stop: threading.Event | None = None, once: bool = False,
             online: OnlineFigures | None = None) -> int:
    """Cycle every ``TRAINER_EVERY`` until ``stop`` is set (SIGTERM/SIGINT set it from the CLI)."""
    stop = stop or threading.Event()
    failures = 0
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            run_cycle(s, online=online)
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
        stop.wait(max(0.0, parse_duration(s.trainer_every) - (time.monotonic() - t0)))
    return 0


# --- command line -------------------------------------------------------------------------------
def cmd_trainer(s: TrainerSettings, args: Any, online: OnlineFigures | None = None) -> int:
    """``attnrec trainer``: cycles until SIGTERM/SIGINT (``--once``: one cycle); ``online`` reads
    the workers' shadow comparison (given by ``attnrec.apps.rollout.cmd_trainer``)."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    log.info("trainer: every %s, event log %s, registry %s", s.trainer_every, s.event_log, s.registry_dir)
    try:
        return run_loop(s, stop=stop, once=s.trainer_once, online=online)
    except AttnrecError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1 if isinstance(exc, ModelError) else 2
