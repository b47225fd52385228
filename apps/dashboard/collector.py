"""What the dashboard shows, built from shared state only: Kafka topics and offsets, the registry.

One background thread owns one kafka-python consumer (no group: it never joins the workers'
group or commits anything) and an admin client. It

- tails ``recs`` (last ``backfill`` records per partition at start, then live) for the feed,
  the serving model versions and the fallback ratio;
- tails ``clicks`` from its end and joins each recommendation to its trigger event by
  ``event_id``: produce-to-recommendation latency = the rec record's Kafka timestamp minus the
  click record's Kafka timestamp (both producer CreateTimes, whatever ``ts`` the event carries);
  with ``join_clicks=False`` it reads no clicks and uses the rec's ``emitted_ts - event_ts``;
- tails ``clicks.dlq`` for the latest errors;
- samples once a second the end offsets of the three topics (events in/s, recs out/s and dead
  letters/min are differences of those, so they count every worker's output) and the workers'
  consumer group: committed offsets, lag per partition, members and who owns which partition.

Nothing here reads a worker's memory, so any number of workers is shown correctly.
:meth:`Collector.snapshot` returns a JSON-ready dict; the web layer only serves it. The
figures themselves (feed rows, rates, percentiles) are :mod:`attnrec.apps.dashboard.figures`'.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import TopicPartition

from attnrec.settings import Settings

from .figures import assignment_topics, chart_point, dead_letter_row, feed_row

__all__ = ["Collector", "CollectorConfig"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class CollectorConfig:
    window_s: float = 60.0  # rolling window of latency percentiles, rates and dead letters/min
    history_s: float = 600.0  # how much chart history the server keeps
    sample_s: float = 1.0  # offsets/lag sampling period
    feed_size: int = 40  # recommendations kept for the live feed
    dlq_size: int = 20  # latest dead letters kept
    backfill: int = 20  # recs read back per partition at start (feed not empty on a quiet stream)
    join_size: int = 200_000  # event_id -> produce time entries kept for the latency join
    # Read clicks to join on event_id (true produce->rec latency). False saves the dashboard's CPU
    # at high rates: latency is then the rec's emitted_ts - event_ts (right when producers stamp
    # events with the current time; replayed history is ignored).
    join_clicks: bool = True


class _Bounded(OrderedDict[str, int]):
    def __init__(self, cap: int) -> None:
        super().__init__()
        self.cap = cap

    def put(self, k: str, v: int) -> None:
        self[k] = v
        if len(self) > self.cap:
            self.popitem(last=False)


class Collector:
    """Background thread that keeps the dashboard's figures; :meth:`snapshot` is thread-safe."""

    def __init__(self, settings: Settings, config: CollectorConfig | None = None) -> None:
        self.s = settings
        self.cfg = config or CollectorConfig()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dashboard-collector", daemon=True)
        self.started_at = time.time()
        # live state (guarded by _lock)
        self._feed: deque[dict[str, Any]] = deque(maxlen=self.cfg.feed_size)
        self._dead: deque[dict[str, Any]] = deque(maxlen=self.cfg.dlq_size)
        self._lat: deque[tuple[float, float]] = deque(maxlen=100_000)  # (wall s, ms)
        self._recent_recs: deque[tuple[float, str, bool]] = deque(maxlen=100_000)  # (wall s, version, fallback)
        self._samples: deque[dict[str, Any]] = deque()
        self._lag: list[dict[str, Any]] = []
        self._group: dict[str, Any] = {"id": settings.group_id, "state": None, "members": []}
        self._recs_seen = 0
        self._clicks_seen = 0
        self._dead_seen = 0
        self._errors: dict[str, str] = {}
        self._last_ok: float | None = None
        self._missing: list[str] = []
        # consumer-thread only
        self._clicks_ts = _Bounded(self.cfg.join_size)
        self._pending = _Bounded(self.cfg.join_size)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Collector:
        """Start the thread (no-op when it runs already)."""
        if not self._thread.is_alive():
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._loop()
            except Exception as exc:  # Kafka down or misconfigured: show it, retry
                log.warning("dashboard collector: %s: %s; retrying in 2 s", type(exc).__name__, exc)
                with self._lock:
                    self._errors["kafka"] = f"{type(exc).__name__}: {exc}"
                self._stop.wait(2.0)

    def _loop(self) -> None:
        from attnrec.kafka_util import admin_client, make_consumer

        s = self.s
        # 15 s, not kafka-python's 305 s: end_offsets blocks that long when the broker is gone
        consumer = make_consumer(s, group_id=None, enable_auto_commit=False, auto_offset_reset="latest", request_timeout_ms=15000)
        admin = admin_client(s, timeout_s=10.0)
        topics = (s.clicks_topic, s.recs_topic, s.dlq_topic)
        assigned: set[TopicPartition] = set()
        next_meta = 0.0
        next_sample = 0.0
        next_group = 0.0
        try:
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_meta:
                    want = {TopicPartition(t, p) for t in topics for p in (consumer.partitions_for_topic(t) or ())}
                    missing = sorted(set(topics) - {tp.topic for tp in want})
                    with self._lock:
                        self._missing = missing
                    if want != assigned:
                        self._assign(consumer, want, assigned)
                        assigned = want
                    next_meta = now + 10.0
                batch = consumer.poll(timeout_ms=200, max_records=5000)
                for tp, records in batch.items():
                    if tp.topic == s.recs_topic:
                        self._on_recs(records)
                    elif tp.topic == s.clicks_topic:
                        self._on_clicks(records)
                    elif tp.topic == s.dlq_topic:
                        self._on_dead(records)
                now = time.monotonic()
                if now >= next_sample and assigned:
                    self._sample(consumer, admin, assigned, describe=now >= next_group)
                    if now >= next_group:
                        # a group that is not Stable (empty, joining, rebalancing) changes within
                        # seconds: look again after 1 s instead of 5 so the page catches up promptly
                        with self._lock:
                            stable = self._group.get("state") == "Stable"
                        next_group = now + (5.0 if stable else 1.0)
                    next_sample = now + self.cfg.sample_s
        finally:
            consumer.close()
            admin.close()

    def _assign(self, consumer: Any, want: set[TopicPartition], had: set[TopicPartition]) -> None:
        consumer.assign(sorted(want))
        if not self.cfg.join_clicks:  # keep them assigned for end offsets, but fetch nothing
            consumer.pause(*[tp for tp in want if tp.topic == self.s.clicks_topic])
        new = sorted(want - had)
        if not new:
            return
        end = consumer.end_offsets(new)
        begin = consumer.beginning_offsets(new)
        for tp in new:
            back = (
                self.cfg.backfill
                if tp.topic == self.s.recs_topic
                else self.cfg.dlq_size
                if tp.topic == self.s.dlq_topic
                else 0
            )
            consumer.seek(tp, max(begin[tp], end[tp] - back))
        log.info("dashboard following %d partitions of %s", len(want), ", ".join(sorted({tp.topic for tp in want})))

    # ------------------------------------------------------------------ records
    def _on_clicks(self, records: list[Any]) -> None:
        wall = time.time()
        lats = []
        for m in records:
            try:
                eid = orjson.loads(m.value)["event_id"]
            except Exception:
                continue  # malformed input: the workers dead-letter it
            if not isinstance(eid, str):
                continue
            rec_ts = self._pending.pop(eid, None)
            if rec_ts is not None:
                lats.append(max(0.0, float(rec_ts - m.timestamp)))
            else:
                self._clicks_ts.put(eid, m.timestamp)
        with self._lock:
            self._clicks_seen += len(records)
            self._lat.extend((wall, x) for x in lats)

    def _on_recs(self, records: list[Any]) -> None:
        wall = time.time()
        since_ms = (wall - self.cfg.window_s) * 1000  # older records (the start-up backfill) feed only the feed
        lats = []
        items = []
        for m in records:
            try:
                rec = orjson.loads(m.value)
            except Exception:
                continue
            trig = rec.get("trigger_event_id")
            latency = None
            if m.timestamp < since_ms:
                pass
            elif not self.cfg.join_clicks:
                ev_ts, em_ts = rec.get("event_ts"), rec.get("emitted_ts")
                if isinstance(ev_ts, int) and isinstance(em_ts, int) and 0 <= em_ts - ev_ts < 3_600_000:
                    latency = float(em_ts - ev_ts)
                    lats.append(latency)
            elif isinstance(trig, str):
                ts = self._clicks_ts.pop(trig, None)
                if ts is not None:
                    latency = max(0.0, float(m.timestamp - ts))
                    lats.append(latency)
                else:
                    self._pending.put(trig, m.timestamp)
            items.append(feed_row(rec, m, latency))
        with self._lock:
            self._recs_seen += len(records)
            self._lat.extend((wall, x) for x in lats)
            for it in items:
                self._feed.appendleft(it)
                if it["kafka_ts"] >= since_ms:
                    self._recent_recs.append((wall, str(it["model_version"]), it["fallback"]))

    def _on_dead(self, records: list[Any]) -> None:
        rows = [dead_letter_row(m) for m in records]
        with self._lock:
            self._dead_seen += len(records)
            for r in rows:
                self._dead.appendleft(r)

    # ------------------------------------------------------------------ offsets
    def _sample(self, consumer: Any, admin: Any, assigned: set[TopicPartition], *, describe: bool) -> None:
        s = self.s
        end = consumer.end_offsets(sorted(assigned))
        totals = {t: 0 for t in (s.clicks_topic, s.recs_topic, s.dlq_topic)}
        for tp, off in end.items():
            totals[tp.topic] += off
        errors: dict[str, str] = {}
        committed: dict[TopicPartition, int] = {}
        try:
            got = admin.list_group_offsets({s.group_id: None}).get(s.group_id, {})
            committed = {tp: om.offset for tp, om in got.items() if tp.topic == s.clicks_topic and om.offset >= 0}
        except Exception as exc:
            errors["group"] = f"committed offsets of {s.group_id}: {type(exc).__name__}: {exc}"
        group = None
        if describe:
            try:
                group = self._describe(admin)
            except Exception as exc:
                errors["group"] = f"describe {s.group_id}: {type(exc).__name__}: {exc}"
        owners = {}
        with self._lock:
            g = group if group is not None else self._group
        for mem in g.get("members", []):
            for p in mem.get("partitions", []):
                owners[p] = mem["client"]
        lag = []
        for tp in sorted((tp for tp in assigned if tp.topic == s.clicks_topic), key=lambda t: t.partition):
            c = committed.get(tp)
            lag.append({
                "partition": tp.partition, "end": end[tp], "committed": c,
                "lag": (end[tp] - c) if c is not None else end[tp],
                "owner": owners.get(tp.partition),
            })  # fmt: skip
        wall = time.time()
        with self._lock:
            if group is not None:
                self._group = group
            self._lag = lag
            self._errors = errors
            self._last_ok = wall
            self._add_sample(
                wall, totals[s.clicks_topic], totals[s.recs_topic], totals[s.dlq_topic], sum(r["lag"] for r in lag)
            )

    def _describe(self, admin: Any) -> dict[str, Any]:
        gid = self.s.group_id
        d = admin.describe_groups([gid]).get(gid, {})
        members = []
        for m in d.get("members", []) or []:
            parts: list[int] = []
            asg = m.get("member_assignment")
            for t in assignment_topics(asg):
                if t[0] == self.s.clicks_topic:
                    parts.extend(t[1])
            members.append({
                "client": f"{m.get('client_id')}@{str(m.get('client_host', '')).lstrip('/')}#{str(m.get('member_id', ''))[-6:]}",
                "member_id": m.get("member_id"),
                "partitions": sorted(parts),
            })  # fmt: skip
        return {"id": gid, "state": d.get("group_state"), "members": members}

    def _add_sample(self, wall: float, clicks: int, recs: int, dead: int, lag: int) -> None:
        """Append one chart point (:func:`chart_point`) and forget what left the window. Lock held."""
        cut = wall - self.cfg.window_s
        while self._lat and self._lat[0][0] < cut:
            self._lat.popleft()
        while self._recent_recs and self._recent_recs[0][0] < cut:
            self._recent_recs.popleft()
        lats = sorted(x for _, x in self._lat)
        self._samples.append(chart_point(self._samples, wall, clicks, recs, dead, lag, lats, self.cfg.window_s))
        while self._samples and self._samples[0]["t"] < wall - self.cfg.history_s:
            self._samples.popleft()

    # ------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any]
        with self._lock:
            samples = list(self._samples)
            last = samples[-1] if samples else None
            versions: dict[str, int] = {}
            fallbacks = 0
            for _, v, fb in self._recent_recs:
                versions[v] = versions.get(v, 0) + 1
                fallbacks += fb
            n_recent = len(self._recent_recs)
            errors = dict(self._errors)
            if self._missing:
                errors["topics"] = "not in Kafka (yet): " + ", ".join(self._missing)
            out = {
                "now": time.time(),
                "started_at": self.started_at,
                "last_sample": self._last_ok,
                "topics": {"clicks": self.s.clicks_topic, "recs": self.s.recs_topic, "dlq": self.s.dlq_topic},
                "window_s": self.cfg.window_s,
                "figures": {
                    "events_per_s": last["events_per_s"] if last else 0.0,
                    "recs_per_s": last["recs_per_s"] if last else 0.0,
                    "latency_p50_ms": last["p50"] if last else None,
                    "latency_p99_ms": last["p99"] if last else None,
                    "latency_samples": last["latency_n"] if last else 0,
                    "lag_total": last["lag"] if last else 0,
                    "dead_per_min": last["dead_per_min"] if last else 0.0,
                    "events_total": last["events_total"] if last else 0,
                    "recs_total": last["recs_total"] if last else 0,
                    "dead_total": last["dead_total"] if last else 0,
                    "fallback_ratio": (fallbacks / n_recent) if n_recent else None,
                    "workers": len(self._group.get("members", [])),
                },
                "history": {
                    k: [smp[k] for smp in samples]
                    for k in ("t", "events_per_s", "recs_per_s", "p50", "p99", "lag", "dead_per_min")
                },
                "lag": list(self._lag),
                "group": dict(self._group),
                "dead_letters": list(self._dead),
                "feed": list(self._feed),
                "serving": versions,
                "errors": errors,
            }
        return out
