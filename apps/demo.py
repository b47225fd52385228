"""``attnrec demo``: the main job, end to end, on the local stack.

1. start Kafka (KRaft) + Redis;
2. generate synthetic click events with planted sequential structure;
3. train a small attention model on the older events, export it to ONNX, check and promote it;
4. start a worker, warm it up with a few seconds of other users' traffic, replay the newer events as a
   live stream and watch recommendations arrive;
5. meanwhile retrain on more data and promote through the gate: the worker hot-reloads;
6. print a summary (events in, recs out, latency, model versions, explanations) and stop.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import shutil
import threading
import time
from typing import Any

import numpy as np

from attnrec.kafka_util import ensure_topics

from .demo_kit import fresh_ids, say, start_worker, stop_worker, train_and_export, wait_ready, write_jsonl
from .replay import RecsTracker, produce
from .settings import DemoSettings
from .stack import free_port, local_stack

__all__ = ["run_demo", "cmd_demo"]

log = logging.getLogger(__name__)


def _drained(tracker: Any, events: list[Any]) -> bool:
    """Every user's last event of ``events`` has triggered a recommendation."""
    last: dict[str, str] = {}
    for ev in events:
        last[ev.user_id] = ev.event_id
    return all(eid in tracker.triggers_seen for eid in last.values())


def _warmup_events(n: int) -> list[Any]:
    """``n`` events of a world of their own (users ``warmup-*``), for the warm-up: they reach the
    worker and Redis as any click does, but no user or event of the replay."""
    from ..training.sim.synth import generate

    events = fresh_ids(generate(300, 800, max(n, 1), seed=23))
    return [dataclasses.replace(ev, user_id=f"warmup-{ev.user_id}", event_id=f"warmup-{ev.event_id}") for ev in events]


def cmd_demo(s: DemoSettings, args: Any) -> int:
    """``attnrec demo``: exit 0 when events went in and recommendations came out."""
    return run_demo(s)


def run_demo(s: DemoSettings) -> int:
    if s.demo_scenario == "live":
        from .demo_live import run_live_demo

        return run_live_demo(s)
    from tqdm import tqdm

    from ..training.sim.synth import generate

    events, rate, train_seconds, keep_stack = s.demo_events, s.demo_rate, s.demo_train_seconds, s.demo_keep_stack
    t_start = time.monotonic()
    home = s.home.resolve()
    work = home / "demo"
    # a fresh demo each time: a previous run's trainer state lists its event files as trained,
    # so this run's trainer cycle would find nothing new and promote nothing
    for old in [work / "trainer", work / "events", *work.glob("ckpt-*")]:
        shutil.rmtree(old, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    st = local_stack(s)
    say(f"starting the local stack (Kafka KRaft on {st.bootstrap}, Redis on 127.0.0.1:{st.redis_port}) under {st.root}")
    st.up()
    ensure_topics(s)

    # --- data: one synthetic world; train on the past, replay the future ------------------------
    n_train = 40_000
    say(f"generating {n_train + events:,} synthetic click events (planted: a like/cart/purchase/gift predicts a follow-up item)")
    all_events = fresh_ids(generate(600, 800, n_train + events, seed=11))
    past, future = all_events[:n_train], all_events[n_train:]
    train_file = write_jsonl(work / "train.jsonl", past)

    registry = s.registry_dir.resolve()
    say(f"training an attention model for up to {train_seconds:.0f}s on {len(past):,} events, then export → ONNX → registry")
    t0 = time.monotonic()
    v1, man1 = train_and_export(s, train_file, work / f"ckpt-{int(time.time())}", registry, force=True)
    val = (man1.get("metrics") or {}).get("val", {})
    print(f"    model {v1}: validation NDCG@10 {val.get('ndcg@10', float('nan')):.4f}, HR@10 {val.get('hr@10', float('nan')):.4f} "
          f"; parity max|Δ| {man1['parity']['max_abs_diff']:.2e}; "
          f"{time.monotonic() - t0:.0f}s")  # fmt: skip

    # --- the worker ------------------------------------------------------------------------------
    port = free_port()
    env = dict(os.environ, ATTNREC_HOME=str(home), ATTNREC_REGISTRY=str(registry), ATTNREC_WEB_PORT=str(port),
               ATTNREC_KAFKA_BOOTSTRAP=st.bootstrap, ATTNREC_REDIS_URL=st.redis_url, ATTNREC_RELOAD_POLL_S="1")  # fmt: skip
    logf = work / "worker.log"
    say(f"starting the worker (log {logf}, API http://127.0.0.1:{port})")
    proc = start_worker(env, logf)
    retrain_result: dict[str, Any] = {}
    try:
        ready = wait_ready(port, proc, logf)
        print(f"    ready: model {ready['model_version']}, {ready['assigned_partitions']} partitions")

        # --- replay the future, retrain in the background ------------------------------------
        tracker = RecsTracker(s).start()
        half = len(future) // 2
        lat1: list[float] = []
        lat2: list[float] = []
        lat_warm: list[float] = []

        def retrain() -> None:
            """One cycle of the periodic trainer (`attnrec trainer`): archive what arrived on
            `clicks`, retrain warm-started from the serving model, export, gated promote."""
            try:
                from ..exporter.settings import TrainerSettings
                from ..exporter.trainer import run_cycle

                events_dir = work / "events"
                events_dir.mkdir(exist_ok=True)
                shutil.copy(train_file, events_dir / "0000-history.jsonl")  # the offline history
                # what the trainer's archive step would have read from `clicks` (kept out of the demo's time)
                write_jsonl(events_dir / "0001-phase1.jsonl", future[:half])
                cfg = TrainerSettings.from_settings(
                    s, registry=registry, home=work, events_dir=events_dir, kafka_bootstrap=st.bootstrap,
                    trainer_group=f"attnrec-demo-trainer-{int(time.time())}", min_new_events=1,
                    trainer_epochs=30, trainer_max_minutes=min(30.0, train_seconds) / 60.0, trainer_threads=1,
                )  # fmt: skip
                summary = run_cycle(cfg, archive=False)
                retrain_result.update(version=summary.get("version"), promoted=summary.get("decision") in ("promoted", "forced"),
                                      reason=summary.get("reason"), warm=summary.get("train", {}).get("warm_start"))  # fmt: skip
            except Exception as exc:  # the demo goes on with the first model
                retrain_result["error"] = f"{type(exc).__name__}: {exc}"

        def replay_phase(events: list[Any], label: str) -> int:
            with tqdm(total=len(events), unit="ev", desc=label, mininterval=0.5) as bar:
                def progress(n: int) -> None:
                    bar.update(n)
                    bar.set_postfix(recs=tracker.received, versions=len(tracker.versions))

                n = produce(s, events, rate=rate, tracker=tracker, progress=progress)
            # let the worker drain before the next phase
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not _drained(tracker, events):
                time.sleep(0.2)
            return n

        sent = 0
        if s.demo_warmup_s > 0:
            warm = _warmup_events(int(rate * s.demo_warmup_s))
            say(f"warm-up: {len(warm):,} events at {rate:.0f}/s from {len({e.user_id for e in warm})} users of their own, "
                "answered but left out of the latency below")
            sent += replay_phase(warm, "warm-up")
            lat_warm = list(tracker.latencies_ms)
        t_phase1 = len(tracker.latencies_ms)
        say(f"phase 1: replaying {half:,} new events at {rate:.0f}/s with model {v1}")
        sent += replay_phase(future[:half], "events → recs (v1)")
        lat1 = tracker.latencies_ms[t_phase1:]

        say("one periodic-trainer cycle on history + phase 1: retrain warm-started, export, gated promote; events keep flowing")
        bt = threading.Thread(target=retrain, daemon=True)
        bt.start()
        # the events after phase 1, each sent once: up to 600 trickle while training, up to 300 more
        # while the new model is awaited, the rest are phase 2 (re-sending an event would be a
        # producer's retry, which never triggers a recommendation of its own)
        after = iter(future[half:])
        trickle = itertools.islice(after, 600)
        while bt.is_alive():  # ~20 events/s keep flowing during training and the swap
            batch = list(itertools.islice(trickle, 10))
            if batch:
                sent += produce(s, batch, rate=20, tracker=tracker)
            else:
                time.sleep(0.5)
        if retrain_result.get("promoted"):
            v2 = retrain_result["version"]
            deadline = time.monotonic() + 15
            more = itertools.islice(after, 300)
            while v2 not in tracker.versions and time.monotonic() < deadline:
                batch = list(itertools.islice(more, 10))
                if batch:
                    sent += produce(s, batch, rate=20, tracker=tracker)
                else:
                    time.sleep(0.2)
            print(f"    {v2} promoted by the gate and serving (hot reload, no restart)")
        else:
            print(f"    retrained model not promoted: {retrain_result.get('error') or retrain_result.get('reason')}")
        rest = list(after)
        say(f"phase 2: replaying {len(rest):,} more events at {rate:.0f}/s")
        t_phase2 = len(tracker.latencies_ms)
        sent += replay_phase(rest, "events → recs (v2)")
        lat2 = tracker.latencies_ms[t_phase2:]
        time.sleep(2.0)
        tracker.stop()
    finally:
        stop_worker(proc)
        if not keep_stack:
            st.down()

    lat = np.asarray(lat1 + lat2) if lat1 or lat2 else np.asarray([float("nan")])
    say("summary")
    print(f"    events in          {sent:,}")
    print(f"    recommendations    {tracker.received:,} (one per user per batch; duplicates {tracker.duplicates})")
    print(f"    latency produce→rec p50 {np.percentile(lat, 50):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms "
          f"(n={len(lat):,}, replay phases at {rate:.0f} events/s; the recommendation of each batch's last event per user)")
    if lat_warm:
        print(f"    cold start         p50 {np.percentile(lat_warm, 50):.1f} ms, p99 {np.percentile(lat_warm, 99):.1f} ms "
              f"(n={len(lat_warm):,}, the {s.demo_warmup_s:g}-s warm-up just after the worker started)")
    print("    model versions     " + ", ".join(f"{v}: {n:,} recs" for v, n in tracker.versions.items()))
    if "version" in retrain_result:
        how = "warm-started, " if retrain_result.get("warm") else ""
        print(f"    retrained model    {retrain_result['version']} ({how}{'promoted, hot-reloaded' if retrain_result['promoted'] else 'not promoted by the gate'})")
    elif "error" in retrain_result:
        print(f"    retraining failed  {retrain_result['error']}")
    for rec in tracker.samples[-3:]:
        why = "; ".join(f"{b['event_type']} {b['item_id']} (weight {b['weight']:.2f})" for b in rec["because"])
        top = ", ".join(i["item_id"] for i in rec["items"][:3])
        print(f"    {rec['user_id']:>6} → {top} … because: {why}")
    print(f"    total time         {time.monotonic() - t_start:.0f}s" + ("" if keep_stack else "; stack stopped"))
    ok = tracker.received > 0 and sent > 0
    return 0 if ok else 1
