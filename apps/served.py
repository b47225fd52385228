"""``attnrec replay-check``: a log through the served path, checked against the prequential
evaluation of the same events.

    attnrec replay-check --data ../shared/data/yoochoose-100k --format yoochoose \\
        --start 2014-04-05 --every 1d --json out.json

What it runs, on the Kafka and Redis of the settings (``attnrec stack up`` for the local one;
not a Redis that serves users: the log's users' state there is cleared first, then replaced by
the log's):

1. a worker (``attnrec worker``, a subprocess; topics, consumer group and online-evaluation
   policy of its own) and the log's events before ``--start`` replayed to it in time order
   (the users' buffers and trending fill; no model serves yet);
2. a cycle of the periodic trainer (:func:`attnrec.exporter.trainer.run_cycle`: archive the
   clicks topic, retrain, export, the promotion gate), then the worker restarted with what the
   gate promoted (a restart starts the online evaluation at ``--start``);
3. for each period of ``--every`` event time: its events replayed round by round
   (:func:`rounds`: the log's order, a user's consecutive events never in one batch), the
   worker drained, a trainer cycle, and the worker's hot swap to a promoted model awaited
   (it swaps between batches, on its idle tick when no event comes);
4. the worker's online counters (``{online}:<policy>`` in Redis: ``attnrec_online_*`` of all its
   lists) read once it is drained, and :func:`attnrec.training.prequential_cli.run`'s figures of
   the same events (methods ``trending``, ``attention``: retrained as the trainer does, gated,
   with the fallback; ``static``: the serving model's popularity list), compared source by
   source: HR@10 and NDCG@10 within ``--tolerance`` (absolute), the events scored the same
   (online within 1 % of the offline pairs), and the models the same (their validation
   NDCG@10 equal, period by period).

Nothing is paced by the wall clock; the trainer's budget is epochs. The JSON report
(``--json``) holds both sides, their differences, and the verdict; the exit status is 1 when
the check fails.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError, ConfigError
from attnrec.kafka_util import committed_offsets, ensure_topics, make_consumer
from attnrec.redis_util import redis_sync
from attnrec.settings import Settings

from .replay import RecsTracker, produce
from .settings import ReplayCheckSettings

__all__ = ["ReplayCheckSettings", "replay_check", "cmd_replay_check", "compare"]

log = logging.getLogger(__name__)

#: The sources compared, online name -> offline method.
SOURCES = {"model": "attention", "trending": "trending", "static": "static"}


class Deadline:
    """A timeout that does not count the time this process was stopped (a run paused with
    SIGSTOP during someone's benchmark resumes where it was): a step between two looks longer
    than ``pause_s`` is taken for a pause and not counted."""

    def __init__(self, seconds: float, pause_s: float = 5.0) -> None:
        self.left, self.pause_s, self._t = seconds, pause_s, time.monotonic()

    def passed(self) -> bool:
        now = time.monotonic()
        step, self._t = now - self._t, now
        if step < self.pause_s:
            self.left -= step
        return self.left <= 0


def _ends(s: Settings, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    c = make_consumer(s, group_id=None)
    try:
        parts = c.partitions_for_topic(topic) or set()
        got = c.end_offsets([TopicPartition(topic, p) for p in parts])
        return {tp.partition: off for tp, off in got.items()}
    finally:
        c.close()


def _drain(s: Settings, worker: Any, timeout_s: float = 600.0) -> None:
    """Wait until the worker's group has committed every offset of the clicks topic, and its
    once-a-second totals are written."""
    ends = _ends(s, s.clicks_topic)
    deadline = Deadline(timeout_s)
    while True:
        done = committed_offsets(s, s.group_id, s.clicks_topic)
        if all(done.get(p, 0) >= end for p, end in ends.items()):
            break
        if worker.proc.poll() is not None:
            raise AttnrecError(f"the worker exited:\n{worker.tail()}")
        if deadline.passed():
            raise AttnrecError(f"the worker did not drain {s.clicks_topic} within {timeout_s:.0f} s: {done} of {ends}")
        time.sleep(0.2)
    time.sleep(2.5)  # the online totals and trending counts are written once a second


def _serving(worker: Any) -> str | None:
    try:
        status, body = worker.get("/readyz")
        return json.loads(body).get("model_version")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        return None


def _start_worker(s: Settings, home: Path, want: str | None, name: str) -> Any:
    from .bench.worker import WorkerHandle

    w = WorkerHandle(s, home, name=name)
    deadline = Deadline(300)
    while True:  # with no model /readyz stays 503: wait for the partitions instead
        if w.proc.poll() is not None:
            raise AttnrecError(f"the worker exited:\n{w.tail()}")
        try:
            status, body = w.get("/readyz")
            b = json.loads(body) if body else {}
        except (OSError, ValueError):  # not listening yet, or a partial answer
            b = {}
        if b.get("assigned_partitions") and b.get("model_version") == want:
            return w
        if deadline.passed():
            raise AttnrecError(f"the worker was not ready within 300 s ({b}):\n{w.tail()}")
        time.sleep(0.3)


def _await_swap(worker: Any, want: str, timeout_s: float = 120.0) -> None:
    deadline = Deadline(timeout_s)
    while _serving(worker) != want:
        if deadline.passed():
            raise AttnrecError(f"the worker did not swap to {want} within {timeout_s:.0f} s:\n{worker.tail()}")
        time.sleep(0.3)


def rounds(events: Sequence[Any]) -> list[list[Any]]:
    """The time-ordered ``events`` cut into contiguous rounds with at most one event per user.

    A worker makes one recommendation per user per batch (for the user's last event in it), so a
    log replayed faster than it happened puts a user's consecutive events in one batch, and the
    online evaluation has nothing to score in between: at 1,000 events/s half of the next clicks
    of a YOOCHOOSE slice went unscored. Replayed a round at a time, each round only once the
    previous round's recommendations are out, every event gets the recommendation it would get
    at the log's own pace; the order of the events is the log's."""
    out: list[list[Any]] = []
    users: set[str] = set()
    for e in events:
        if not out or e.user_id in users:
            out.append([])
            users = set()
        out[-1].append(e)
        users.add(e.user_id)
    return out


def _replay_rounds(s: Settings, events: Sequence[Any], tracker: Any, worker: Any, timeout_s: float = 120.0) -> int:
    """Produce ``events`` round by round (:func:`rounds`), each once the worker has published a
    recommendation for every event of the previous one; the number of rounds."""
    from attnrec.kafka_util import make_producer

    parts = rounds(events)
    p = make_producer(s, linger_ms=0)
    try:
        for part in parts:
            for e in part:
                p.send(s.clicks_topic, key=e.user_id.encode(), value=e.to_json())
            p.flush(60)
            deadline = Deadline(timeout_s)
            while not all(e.event_id in tracker.triggers_seen for e in part):
                if worker.proc.poll() is not None:
                    raise AttnrecError(f"the worker exited:\n{worker.tail()}")
                if deadline.passed():
                    missing = sum(e.event_id not in tracker.triggers_seen for e in part)
                    raise AttnrecError(f"{missing} of a round's {len(part)} events got no recommendation within "
                                       f"{timeout_s:.0f} s:\n{worker.tail()}")
                time.sleep(0.002)
    finally:
        p.close(10)
    return len(parts)


def _online(s: Settings) -> dict[str, dict[str, float]]:
    """The worker's online totals per source (every version of a source together)."""
    from ..stream.stages.online import ONLINE_KEY, totals

    rows = totals(redis_sync(s).hgetall(ONLINE_KEY + s.policy_name))
    out: dict[str, dict[str, float]] = {}
    for r in rows:
        acc = out.setdefault(str(r["source"]), {"events": 0, "hits": 0, "ndcg_sum": 0.0})
        acc["events"] += int(r["events"])  # type: ignore[call-overload]
        acc["hits"] += int(r["hits"])  # type: ignore[call-overload]
        acc["ndcg_sum"] += float(r["ndcg@10"] or 0.0) * int(r["events"])  # type: ignore[arg-type, call-overload]
    for acc in out.values():
        n = acc["events"]
        acc["hr@10"] = round(acc["hits"] / n, 5) if n else 0.0
        acc["ndcg@10"] = round(acc.pop("ndcg_sum") / n, 5) if n else 0.0
    return out


#: How far the online evaluation's count may be from the offline pairs, as a share of them. A
#: round-by-round replay scores them all; a worker restart inside a period loses its users' next
#: events, and a batch redone after the group fenced its worker (a pause past the session
#: timeout) is observed twice by the online evaluation, which counts at least once: one next
#: click of 19,570 was counted twice so on YOOCHOOSE.
COVERAGE_SLACK = 0.01


def compare(online: dict[str, dict[str, float]], offline: dict[str, dict[str, Any]], pairs: int,
            tolerance: float) -> dict[str, Any]:
    """Source by source: both sides' HR@10 and NDCG@10 and events, their differences, and whether
    every difference is within ``tolerance`` and the online side scored (nearly) every pair."""
    rows: dict[str, Any] = {}
    ok = pairs > 0
    for src, method in SOURCES.items():
        on, off = online.get(src), offline.get(method)
        if on is None or off is None:
            rows[src] = {"missing": "online" if on is None else "offline"}
            ok = False
            continue
        coverage = on["events"] / pairs if pairs else 0.0
        ok &= abs(coverage - 1.0) <= COVERAGE_SLACK
        row = {"online_events": on["events"], "offline_pairs": pairs, "coverage": round(coverage, 5)}
        for m in ("hr@10", "ndcg@10"):
            d = on[m] - off[m][0]
            row[m] = {"online": on[m], "offline": off[m][0], "offline_ci": off[m][1:3], "difference": round(d, 5)}
            ok &= abs(d) <= tolerance
        rows[src] = row
    return {"sources": rows, "tolerance": tolerance, "coverage_slack": COVERAGE_SLACK, "within": bool(ok)}


def replay_check(s: ReplayCheckSettings, events: list[Any] | None = None) -> dict[str, Any]:
    """The whole check (module text); the report."""
    from attnrec.units import parse_duration

    from ..exporter.settings import TrainerSettings
    from ..exporter.trainer import run_cycle
    from ..stream.core.buffer import user_keys
    from ..stream.stages.trending import BUCKETS
    from ..training.prequential import Method, Stream
    from ..training.prequential_cli import _events, parse_when, run
    from ..training.prequential_models import Neural

    if s.preq_start is None:
        raise ConfigError("--start is required (or set ATTNREC_PREQ_START): where the served model starts")
    events = events if events is not None else _events(s)
    stream = Stream.of(events)
    evs = stream.events
    first = int(stream.ts[0])
    start, every = parse_when(s.preq_start, first), int(parse_duration(s.preq_every) * 1000)
    end = parse_when(s.preq_end, first) if s.preq_end else int(stream.ts[-1]) + 1
    evs = [e for e in evs if e.ts < end]
    tag = uuid.uuid4().hex[:8]
    work = s.home / "replay-check" / tag
    work.mkdir(parents=True, exist_ok=True)
    ws = Settings.from_settings(s, registry=work / "registry", clicks_topic=f"clicks-check-{tag}",
                                recs_topic=f"recs-check-{tag}", dlq_topic=f"clicks-check-{tag}.dlq",
                                updates_topic=f"model-updates-check-{tag}", group_id=f"attnrec-check-{tag}",
                                policy_name=f"check-{tag}", online_eval=True, trending=True)
    ts = TrainerSettings.from_settings(ws, home=work, events_dir=work / "events", trainer_group=f"attnrec-check-{tag}-trainer",
                                       min_new_events=0, trainer_epochs=s.preq_epochs, trainer_max_minutes=1e6,
                                       trainer_threads=s.train_threads, margin=s.preq_margin,
                                       trainer_min_item_support=s.data_min_item_support, trainer_holdout=s.preq_holdout,
                                       top_k=ws.top_k)
    ensure_topics(ws)
    # the log's users and an old log's trending buckets start empty: an earlier replay of the same log left the users'
    # buffers and event ids (its events would be taken for retries of those, and get no recommendation) and its counts
    bucket_ms = max(1, int(ws.trending_window_s * 1000) // BUCKETS)
    r = redis_sync(ws)
    stale = [f"{{trend:all}}:{b}" for b in range(first // bucket_ms, end // bucket_ms + 1)]
    for i in range(0, len(stale), 1000):
        r.delete(*stale[i:i + 1000])
    with r.pipeline(transaction=False) as pipe:  # a user's keys share a Redis Cluster slot
        for u in sorted({e.user_id for e in evs}):
            pipe.delete(*user_keys(u))
        pipe.execute()
    bounds = list(range(start, end, every))
    served: list[dict[str, Any]] = []
    report: dict[str, Any] = {"tag": tag, "events": len(evs), "periods": served}
    wall: dict[str, float] = {"prefix": 0.0, "trainer": 0.0, "rounds": 0.0, "offline": 0.0}
    report["wall_s"] = wall
    t0 = time.monotonic()
    worker = _start_worker(ws, work, None, "worker-prefix")
    tracker = RecsTracker(ws).start()
    try:
        prefix = [e for e in evs if e.ts < start]
        produce(ws, prefix, rate=None)  # state only: nothing before --start is scored
        _drain(ws, worker)
        worker.terminate()
        wall["prefix"] = time.monotonic() - t0
        for k, b in enumerate(bounds):
            t0 = time.monotonic()
            cycle = run_cycle(ts)
            wall["trainer"] += time.monotonic() - t0
            version = cycle.get("version")
            current = cycle.get("current")
            served.append({"start_ms": b, "version": version, "decision": cycle.get("decision"), "reason": cycle.get("reason"),
                           "val_ndcg@10": (cycle.get("train") or {}).get("val_ndcg@10")})
            log.info("replay-check: period %d: %s %s (%s)", k + 1, cycle.get("decision"), version, cycle.get("reason"))
            if k == 0:
                r.delete(f"{{online}}:{ws.policy_name}")
                worker = _start_worker(ws, work, current, "worker")
            elif cycle.get("decision") == "promoted" and current:
                _await_swap(worker, current)
            hi = bounds[k + 1] if k + 1 < len(bounds) else end
            t0 = time.monotonic()
            served[-1]["rounds"] = _replay_rounds(ws, [e for e in evs if b <= e.ts < hi], tracker, worker)
            _drain(ws, worker)
            wall["rounds"] += time.monotonic() - t0
            served[-1]["serving"] = _serving(worker)
            served[-1]["online_events"] = {src: int(v["events"]) for src, v in _online(ws).items()}
        online = _online(ws)
    finally:
        tracker.stop()
        worker.terminate()

    # the offline side: the same events, the same retrains, the worker's policy
    attention: dict[str, Any] = {}

    class Static(Method):
        """The serving model's static popularity list, as the online evaluation's ``static``."""

        name = "static"

        def lists(self, stream: Stream, reqs: Any, n: int, ctx: Any) -> dict[str, Any]:
            import numpy as np

            from ..training.prequential import POLICIES, _pick

            sv = attention["m"].serving
            static = sv["static"] if sv is not None else []
            out = {p: np.full((len(reqs), n), -1, dtype=np.int64) for p in POLICIES}
            for r_, e in enumerate(reqs.tolist()):
                for p in POLICIES:
                    row = _pick(static, n, ctx.seen(stream, e) if p == "excluded" else None)[:10]
                    out[p][r_, :len(row)] = row
            return out

    def neural(name: str) -> Any:
        if name == "static":
            return Static()
        attention["m"] = Neural("attention", gated=True, epochs=s.preq_epochs, threads=s.train_threads,
                                min_item_support=s.data_min_item_support, margin=s.preq_margin, holdout=s.preq_holdout)
        return attention["m"]

    off = s.model_copy(update={"preq_methods": "trending,attention,static", "preq_exclude_window": ws.exclude_window,
                               "preq_trending_window_s": ws.trending_window_s, "preq_trending_weights": None,
                               "preq_test_from": None, "preq_end": None, "preq_json": None, "preq_plot": None})
    t0 = time.monotonic()
    offline = run(off, evs, neural=neural)
    wall["offline"] = time.monotonic() - t0
    for k_ in wall:
        wall[k_] = round(wall[k_], 1)
    policy = "excluded" if ws.exclude_seen else "allowed"
    figs = offline["figures"][policy]["all"]["methods"]
    report["policy"] = policy
    report["online"] = online
    report["offline"] = {"pairs": offline["pairs"], "figures": figs, "periods": offline["periods"],
                         "cpu_seconds": offline["cpu_seconds"]}
    report["comparison"] = compare(online, figs, offline["pairs"], s.check_tolerance)
    same = [p.get("attention", {}).get("val_ndcg@10") for p in offline["periods"]]
    report["same_models"] = {"served_val_ndcg@10": [p["val_ndcg@10"] for p in served], "offline_val_ndcg@10": same,
                             "equal": all(a is not None and b is not None and abs(a - b) <= 6e-6  # offline's are rounded
                                          for a, b in zip((p["val_ndcg@10"] for p in served), same, strict=False))}
    if s.check_json is not None:
        s.check_json.parent.mkdir(parents=True, exist_ok=True)
        s.check_json.write_text(json.dumps(report, indent=1) + "\n")
    if not s.check_keep:
        shutil.rmtree(work, ignore_errors=True)
    return report


def cmd_replay_check(s: ReplayCheckSettings, args: Any) -> int:
    """``attnrec replay-check``: the comparison on stdout (JSON); exit 1 outside the tolerance, or
    when a served model is not the one the evaluation retrained."""
    report = replay_check(s)
    print(json.dumps({"comparison": report["comparison"], "same_models": report["same_models"]}, indent=1))
    return 0 if report["comparison"]["within"] and report["same_models"]["equal"] else 1
