"""Producing click events to Kafka at a paced rate, and tracking the recommendations they cause.

Used by ``attnrec replay``, the demo and the benchmark. Events come from a file (JSONL or CSV
of our schema, or an event log a user brings: yoochoose, Taobao UserBehavior, DIGINETICA item
views, any CSV/JSONL with a column mapping; :mod:`attnrec.training.logs`), sent in time order,
or from the synthetic generator; or, with
``--scenario live``, from the live-commerce simulator (:mod:`attnrec.training.sim.live`), whose click events
go to the clicks topic and whose catalog events (rooms live/ended, products on/off the shelf,
stock) go to the catalog topic, each sent at its ts offset from the first (so a burst in the
schedule is a burst on the wire).
"""

from __future__ import annotations

import csv
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from attnrec.errors import ConfigError, DataError
from attnrec.events import CatalogEvent, ClickEvent, parse_event
from attnrec.kafka_util import ensure_topics, make_consumer, make_producer
from attnrec.settings import Settings, parse_rate

from .settings import ReplaySettings

__all__ = ["iter_file_events", "iter_synthetic", "iter_live", "Pacer", "produce", "produce_live", "replay", "replay_live",
           "cmd_replay", "RecsTracker"]

log = logging.getLogger(__name__)


def iter_file_events(path: Path, fmt: str = "auto", spec: Any = None, order: str = "time") -> Iterator[ClickEvent]:
    """The events of a file (or a log's directory) in format ``fmt``: ``events`` (JSONL or CSV of
    our schema), an event log of :mod:`attnrec.training.logs` read as ``spec`` says (yoochoose,
    taobao, diginetica, table), or ``auto``: a DIGINETICA item-views CSV by its header, else our
    schema. ``order`` time: sorted by time (a log sorted by session is replayed as it happened;
    the whole log is read first), file: as the file has them (streamed)."""
    from ..training.logs import LOG_FORMATS, LogSpec, in_time_order, read_log

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if fmt == "auto":
        fmt = "events"
        if path.is_file():
            with open(path, "rb") as f:
                if f.readline().startswith((b"session_id;user_id;item_id", b"sessionId;userId;itemId")):
                    fmt = "diginetica"
    if fmt in LOG_FORMATS:
        events: Iterable[ClickEvent] = read_log(path, spec if spec is not None and spec.fmt == fmt else LogSpec(fmt))
    elif path.is_dir():
        raise DataError(f"{path}: a directory; format events replays one file")
    else:
        events = _schema_events(path)
    yield from (in_time_order(events) if order == "time" else events)


def _schema_events(path: Path) -> Iterator[ClickEvent]:
    """JSONL (one event per line) or CSV with a header of our schema's fields."""
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            for n, row in enumerate(csv.DictReader(f), start=2):
                try:
                    yield parse_event(orjson.dumps({**row, "ts": int(row["ts"]) if str(row.get("ts", "")).isdigit() else row.get("ts"),
                                                    "event_id": row.get("event_id") or f"{path.stem}-{n}"}))  # fmt: skip
                except Exception as exc:
                    raise DataError(f"{path}:{n}: {exc}") from None
        return
    with open(path, "rb") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield parse_event(line)
            except Exception as exc:
                raise DataError(f"{path}:{n}: {exc}") from None


def iter_synthetic(count: int, seed: int = 7, n_users: int | None = None, n_items: int | None = None, restamp: bool = False) -> Iterator[ClickEvent]:
    """Synthetic events (training/sim/synth.py), optionally re-stamped to "now" keeping their gaps."""
    from ..training.sim.synth import generate

    users = n_users or max(50, count // 40)
    items = n_items or max(200, min(3000, count // 10))
    evs = generate(users, items, count, seed=seed)
    if not restamp:
        yield from evs
        return
    first: int | None = None
    now = int(time.time() * 1000)
    for ev in evs:
        if first is None:
            first = ev.ts
        yield ClickEvent(ev.event_id, ev.user_id, ev.item_id, ev.event_type, now + (ev.ts - first) // 1000, ev.context)


def iter_live(s: ReplaySettings) -> Iterator[ClickEvent | CatalogEvent]:
    """The live scenario of these settings: ``REPLAY_COUNT`` click events at ``REPLAY_RATE``
    (rate max: scheduled at 1000/s), the burst of ``REPLAY_BURST_*``, seed ``REPLAY_SEED``."""
    from ..training.sim.live import generate_live

    return generate_live(s.replay_count, seed=s.replay_seed, rate=parse_rate(s.replay_rate) or 1000.0,
                         burst_at_s=s.replay_burst_at_s, burst_s=s.replay_burst_s, burst_factor=s.replay_burst_factor)  # fmt: skip


class Pacer:
    """Sleeps so that ``n`` calls to :meth:`tick` take ``n / rate`` seconds (rate None = max)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.t0 = time.perf_counter()
        self.n = 0

    def tick(self) -> None:
        self.n += 1
        if not self.rate:
            return
        ahead = self.n / self.rate - (time.perf_counter() - self.t0)
        if ahead > 0.001:
            time.sleep(ahead)


@dataclass
class RecsTracker:
    """Consumes ``recs`` in a thread and matches each recommendation to the event that
    triggered it: produce time -> arrival time gives the end-to-end latency."""

    settings: Settings
    topic: str | None = None
    sent: dict[str, float] = field(default_factory=dict)  # event_id -> produce time (perf_counter)
    latencies_ms: list[float] = field(default_factory=list)
    latency_by_trigger: dict[str, float] = field(default_factory=dict)  # trigger event_id -> ms (first rec)
    received: int = 0
    triggers_seen: set[str] = field(default_factory=set)
    duplicates: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    samples: list[dict] = field(default_factory=list)
    on_rec: Callable[[dict], None] | None = None

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, name="recs-tracker", daemon=True)

    def start(self) -> RecsTracker:
        self._t.start()
        self._ready.wait(30)
        return self

    def _run(self) -> None:
        c = make_consumer(self.settings, self.topic or self.settings.recs_topic, group_id=None,
                          auto_offset_reset="latest", consumer_timeout_ms=200)  # fmt: skip
        try:
            # join at the end of the topic before the producer starts
            while not c.assignment():
                c.poll(timeout_ms=100)
            c.seek_to_end()
            for tp in c.assignment():
                c.position(tp)
            self._ready.set()
            while not self._stop.is_set():
                batch = c.poll(timeout_ms=100, max_records=5000)
                now = time.perf_counter()
                for recs in batch.values():
                    for m in recs:
                        self._on(orjson.loads(m.value), now)
        finally:
            self._ready.set()
            c.close()

    def _on(self, rec: dict, now: float) -> None:
        with self._lock:
            self.received += 1
            trig = rec.get("trigger_event_id")
            if trig in self.triggers_seen:
                self.duplicates += 1
            else:
                self.triggers_seen.add(trig)
            t = self.sent.get(trig)
            if t is not None:
                self.latencies_ms.append(1000.0 * (now - t))
                self.latency_by_trigger.setdefault(trig, 1000.0 * (now - t))
            v = str(rec.get("model_version"))
            self.versions[v] = self.versions.get(v, 0) + 1
            if len(self.samples) < 200 and rec.get("because"):
                self.samples.append(rec)
        if self.on_rec is not None:
            self.on_rec(rec)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)


def produce(
    settings: Settings,
    events: Iterable[ClickEvent],
    *,
    rate: float | None,
    topic: str | None = None,
    tracker: RecsTracker | None = None,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Send events keyed by user_id at ``rate`` events/s; returns how many were sent."""
    p = make_producer(settings)
    topic = topic or settings.clicks_topic
    pacer = Pacer(rate)
    n = 0
    try:
        for ev in events:
            if tracker is not None:
                tracker.sent[ev.event_id] = time.perf_counter()
            p.send(topic, key=ev.user_id.encode(), value=ev.to_json())
            n += 1
            pacer.tick()
            if progress is not None and n % 100 == 0:
                progress(100)
        p.flush(60)
    finally:
        p.close(10)
    if progress is not None:
        progress(n % 100)
    return n


def produce_live(
    settings: Settings,
    events: Iterable[ClickEvent | CatalogEvent],
    *,
    paced: bool = True,
    restamp: bool = True,
    topic: str | None = None,
    catalog_topic: str | None = None,
    tracker: RecsTracker | None = None,
    progress: Callable[[int], None] | None = None,
    on_send: Callable[[ClickEvent | CatalogEvent], None] | None = None,
    sent_at: dict[str, float] | None = None,
) -> tuple[int, int]:
    """Send click events (keyed by user_id, to ``topic``, default the clicks topic) and catalog
    events (keyed by item_id, to ``catalog_topic``, default ``CATALOG_TOPIC``) in their order,
    each at its ts offset from the first event (``paced``; else as fast as possible). Returns
    (clicks, catalog events) sent.

    ``restamp`` moves the ts so that the first event is now (epoch ms, gaps kept). ``on_send``
    gets each event as sent (re-stamped), right after it is handed to the producer; ``sent_at``
    gets event_id -> send time (``time.monotonic()``) of every event; ``tracker.sent`` the
    click events' (``time.perf_counter()``, as :func:`produce`); ``progress`` counts clicks.
    """
    p = make_producer(settings)
    topic = topic or settings.clicks_topic
    catalog_topic = catalog_topic or settings.catalog_topic
    n_click = n_cat = 0
    first: int | None = None
    t0 = now_ms = 0.0
    try:
        for ev in events:
            if first is None:
                first, t0, now_ms = ev.ts, time.perf_counter(), time.time() * 1000
            offset_ms = ev.ts - first
            if paced:
                ahead = t0 + offset_ms / 1000 - time.perf_counter()
                if ahead > 0.001:
                    time.sleep(ahead)
            if restamp:
                ts = int(now_ms) + offset_ms
                if isinstance(ev, ClickEvent):
                    ev = ClickEvent(ev.event_id, ev.user_id, ev.item_id, ev.event_type, ts, ev.context, ev.unknown_type)
                else:
                    ev = CatalogEvent(ev.event_id, ev.item_id, ev.status, ts, ev.count, ev.category, ev.room_id)
            if sent_at is not None:
                sent_at[ev.event_id] = time.monotonic()
            if isinstance(ev, ClickEvent):
                if tracker is not None:
                    tracker.sent[ev.event_id] = time.perf_counter()
                p.send(topic, key=ev.user_id.encode(), value=ev.to_json())
                n_click += 1
                if progress is not None and n_click % 100 == 0:
                    progress(100)
            else:
                p.send(catalog_topic, key=ev.item_id.encode(), value=ev.to_json())
                n_cat += 1
            if on_send is not None:
                on_send(ev)
        p.flush(60)
    finally:
        p.close(10)
    if progress is not None:
        progress(n_click % 100)
    return n_click, n_cat


def replay_live(s: ReplaySettings) -> tuple[int, int]:
    """``--scenario live``: the simulator's clicks to ``REPLAY_TOPIC`` (default the clicks topic)
    and its catalog events to ``CATALOG_TOPIC``, paced by their ts (``REPLAY_RATE`` and the
    burst are in the schedule; rate max: no pacing). Returns (clicks, catalog events) sent."""
    from tqdm import tqdm

    if s.replay_data is not None or s.replay_synthetic:
        raise ConfigError("--scenario live (ATTNREC_REPLAY_SCENARIO) generates its own events: "
                          "drop --data (ATTNREC_REPLAY_DATA) and --synthetic (ATTNREC_REPLAY_SYNTHETIC)")  # fmt: skip
    if s.replay_count <= 0:
        raise ConfigError("--scenario live needs --count (ATTNREC_REPLAY_COUNT) > 0: the click events to generate")
    topic = s.replay_topic or s.clicks_topic
    ensure_topics(s, names=list(dict.fromkeys((s.clicks_topic, s.recs_topic, s.dlq_topic, s.updates_topic, topic, s.catalog_topic))))
    with tqdm(total=s.replay_count, unit="ev", desc="replay live", mininterval=0.5, disable=s.quiet) as bar:
        n, m = produce_live(s, iter_live(s), paced=parse_rate(s.replay_rate) is not None, topic=topic, progress=bar.update)
    log.info("produced %d click events to %s and %d catalog events to %s", n, topic, m, s.catalog_topic)
    return n, m


def replay(s: ReplaySettings) -> int:
    """Produce ``REPLAY_COUNT`` events from ``REPLAY_DATA`` or the synthetic generator to
    ``REPLAY_TOPIC`` (default the clicks topic) at ``REPLAY_RATE``; returns how many were sent.
    With ``REPLAY_SCENARIO`` live: :func:`replay_live` (returns the click events sent)."""
    import itertools

    from tqdm import tqdm

    if s.replay_scenario is not None:
        return replay_live(s)[0]
    if (s.replay_data is None) == (not s.replay_synthetic):
        raise ConfigError("give either --data FILE (ATTNREC_REPLAY_DATA) or --synthetic (ATTNREC_REPLAY_SYNTHETIC)")
    count = s.replay_count
    if s.replay_synthetic:
        events: Iterable[ClickEvent] = iter_synthetic(count, seed=s.replay_seed)
    else:
        assert s.replay_data is not None
        from ..training.settings import log_spec

        spec = log_spec(s.replay_format, s.replay_columns, s.replay_types, s.replay_time_unit) \
            if s.replay_format != "auto" else None
        it = iter_file_events(s.replay_data, s.replay_format, spec, s.replay_order)
        if s.replay_order == "time":  # read (and check) the whole log before anything is sent
            it = iter(list(it))
        events = itertools.islice(it, count) if count else it
    ensure_topics(s)
    with tqdm(total=count or None, unit="ev", desc="replay", mininterval=0.5, disable=s.quiet) as bar:
        n = produce(s, events, rate=parse_rate(s.replay_rate), topic=s.replay_topic, progress=bar.update)
    log.info("produced %d events to %s", n, s.replay_topic or s.clicks_topic)
    return n


def cmd_replay(s: ReplaySettings, args: Any) -> int:
    """``attnrec replay``: prints ``{"produced": N, "topic": T}`` (live scenario: also
    ``"catalog": M, "catalog_topic": C``)."""
    if s.replay_scenario is not None:
        n, m = replay_live(s)
        print(json.dumps({"produced": n, "catalog": m, "topic": s.replay_topic or s.clicks_topic, "catalog_topic": s.catalog_topic}))
        return 0
    n = replay(s)
    print(json.dumps({"produced": n, "topic": s.replay_topic or s.clicks_topic}))
    return 0


def new_event_id() -> str:
    return uuid.uuid4().hex
