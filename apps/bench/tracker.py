"""Which events each recommendation answers, and how long each event waited for it.

One run::

    generator (this process) --clicks--> worker (subprocess) --recs--> tracker (this process)

Both ends are librdkafka clients (:mod:`attnrec.apps.bench.clients`); the tracker reads
``read_committed``, as the worker's users are told to.

Accounting (why a rec "covers" several events). The worker emits one recommendation per user
per batch, after all that user's events in the batch were applied; its ``trigger_event_id`` is
the user's last event in the batch. Events of one user are produced in order to one partition
and processed in order, so a rec for user ``u`` whose trigger is ``u``'s k-th event reflects
events 1..k. The tracker therefore keeps, per user, the list of produced events in send order
and a pointer to the first uncovered one; a rec with trigger k covers every still-uncovered
event up to and including k, and each covered event's latency is (rec arrival - that event's
own produce time). So an event folded into a later event's batch is charged its full wait, not
the trigger's. A rec whose trigger was already seen is a duplicate (DESIGN.md: consumers dedupe
by trigger_event_id). A dead letter whose raw bytes carry an event_id accounts for that event
too (counted apart). ``lost`` = events neither covered nor dead-lettered when the drain ends.

Hops. When the worker sends ``attnrec-timing`` headers (``ATTNREC_TIMING_HEADERS``) and the
bench's topics stamp records with the broker's append time (``LogAppendTime``), each measured
trigger's latency is split where it was spent (:data:`HOPS`): generator send -> broker append
of the click -> worker receive -> batch start (queueing) -> Redis done -> model done -> handed
to the producer -> broker append of the recommendation -> this consumer. All clocks are this
box's wall clock.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

import orjson

from attnrec.errors import AttnrecError
from attnrec.settings import Settings

__all__ = ["CoverageTracker", "HOPS"]

#: The hops of a trigger's latency, in order (see the module docstring).
HOPS = ("produce_to_broker", "broker_to_worker", "queued_in_worker", "parse_and_redis", "inputs_and_model",
        "recommend_and_enqueue", "producer_to_broker", "broker_to_consumer")

log = logging.getLogger(__name__)
#: librdkafka's timestamp type of a record stamped by the broker (confluent_kafka.TIMESTAMP_LOG_APPEND_TIME)
_LOG_APPEND_TIME = 2


class CoverageTracker:
    """Consumes ``recs`` and the dead-letter topic; attributes each rec to the events it covers.

    The producer calls :meth:`sent` just before sending each event. See the module docstring
    for the accounting.
    """

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self._lock = threading.Lock()
        self.by_user: dict[str, list[tuple[str, float, bool]]] = {}  # user -> [(event_id, t_sent, measured)]
        self.index: dict[str, tuple[str, int]] = {}  # event_id -> (user, position)
        self.ptr: dict[str, int] = {}
        self.triggers: set[str] = set()
        self.latencies: list[float] = []  # ms, measured events only
        self.n_sent = 0
        self.n_covered = 0
        self.n_dead = 0
        self.duplicates = 0
        self.unmatched = 0  # recs for triggers we did not send (other traffic)
        self.stale = 0  # recs whose trigger was already covered by a later rec (should be 0)
        self.fallbacks = 0
        self.recs = 0
        self.hops: list[tuple[float, ...]] = []  # ms per HOPS entry, measured triggers with timing headers
        self.first_cover: float | None = None
        self._epoch = time.time() - time.perf_counter()  # perf_counter -> wall clock (ms precision is enough)
        self.first_measured_sent: float | None = None
        self.last_measured_cover: float | None = None
        self.n_measured = 0
        self.n_measured_covered = 0
        self.t_measure: float | None = None  # set by the producer when the measured window opens
        self.window_covered = 0  # events (measured or not) covered at or after t_measure
        self.last_cover: float | None = None
        #: the agent's own span (:meth:`agent_span`): set ``track_agent_span`` before :meth:`start`
        self.track_agent_span = False
        self.agent_first_received_ms: float | None = None
        self.agent_last_appended_ms: float | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._t = threading.Thread(target=self._run, name="bench-tracker", daemon=True)

    # producer side ---------------------------------------------------------------------------
    def sent(self, event_id: str, user: str, t: float, measured: bool) -> None:
        lst = self.by_user.get(user)
        if lst is None:
            lst = self.by_user[user] = []
            self.ptr[user] = 0
        self.index[event_id] = (user, len(lst))
        lst.append((event_id, t, measured))
        self.n_sent += 1
        if measured:
            self.n_measured += 1
            if self.first_measured_sent is None:
                self.first_measured_sent = t

    @property
    def done(self) -> int:
        return self.n_covered + self.n_dead

    # consumer side ---------------------------------------------------------------------------
    def start(self, timeout: float = 60.0) -> CoverageTracker:
        self._t.start()
        if not self._ready.wait(timeout):
            raise AttnrecError("the recs tracker could not join its topics in time")
        if self._error is not None:
            raise AttnrecError(f"recs tracker failed: {self._error}")
        return self

    def stop(self) -> None:
        self._stop.set()
        self._t.join(10)

    def _run(self) -> None:
        from confluent_kafka import TopicPartition

        from .clients import rd_consumer

        c = rd_consumer(self.s)  # read committed, as the worker's users read it
        try:
            tps = []
            deadline = time.monotonic() + 30
            for topic in (self.s.recs_topic, self.s.dlq_topic):
                parts: list[int] = []
                while not parts and time.monotonic() < deadline:
                    md = c.list_topics(topic, timeout=5).topics.get(topic)
                    parts = sorted(md.partitions) if md is not None and md.error is None else []
                    if not parts:
                        time.sleep(0.2)
                # start at each partition's end, resolved now: nothing produced after start() is missed
                tps += [TopicPartition(topic, p, _end_offset(c, TopicPartition(topic, p), deadline)) for p in parts]
            c.assign(tps)
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            c.close()
            return
        self._ready.set()
        dlq = self.s.dlq_topic
        try:
            while not self._stop.is_set():
                # the first record as soon as it arrives, then whatever else is there: a batch
                # consume waits for its whole count or its timeout (+26 ms at 100 events/s)
                first = c.poll(0.05)
                if first is None:
                    continue
                msgs = [first, *c.consume(num_messages=10000, timeout=0)]
                now = time.perf_counter()
                for m in msgs:
                    if m.error() is not None:
                        continue
                    if m.topic() == dlq:
                        self._on_dead(m.value())
                    else:
                        self._on_rec(orjson.loads(m.value()), now, m)
        finally:
            c.close()

    def _on_rec(self, rec: dict[str, Any], now: float, record: Any = None) -> None:
        self.recs += 1
        if self.track_agent_span and record is not None:
            self._agent_marks(record)
        trig = str(rec.get("trigger_event_id"))
        if rec.get("fallback"):
            self.fallbacks += 1
        if trig in self.triggers:
            self.duplicates += 1
            return
        self.triggers.add(trig)
        where = self.index.get(trig)
        if where is None:
            self.unmatched += 1
            return
        user, k = where
        lst, start = self.by_user[user], self.ptr[user]
        if k < start:
            self.stale += 1
            return
        for j in range(start, k + 1):
            _, t_sent, measured = lst[j]
            if measured:
                self.latencies.append(1000.0 * (now - t_sent))
                self.n_measured_covered += 1
                self.last_measured_cover = now
        if lst[k][2] and record is not None and record.headers():
            self._hops(lst[k][1], now, record)
        if self.first_cover is None:
            self.first_cover = now
        self.ptr[user] = k + 1
        self.n_covered += k + 1 - start
        if self.t_measure is not None and now >= self.t_measure:
            self.window_covered += k + 1 - start
            self.last_cover = now

    def _hops(self, t_sent: float, now: float, record: Any) -> None:
        """Split a trigger's latency at the worker's milestones (``attnrec-timing``) and the
        broker's append time of the recommendation (``record.timestamp()``, LogAppendTime)."""
        marks6 = _timing_marks(record)
        if marks6 is None:
            return
        (appended, received, start, redis_done, model_done, handed), ts = marks6
        sent_ms, now_ms = 1000.0 * (self._epoch + t_sent), 1000.0 * (self._epoch + now)
        marks = (sent_ms, appended, received, start, redis_done, model_done, handed, ts, now_ms)
        self.hops.append(tuple(b - a for a, b in zip(marks, marks[1:], strict=False)))

    def _agent_marks(self, record: Any) -> None:
        """Widen the agent's span by one recommendation: its trigger's receive time in the agent
        (``attnrec-timing``) and the broker's append time of the recommendation."""
        marks6 = _timing_marks(record)
        if marks6 is None:
            return
        received, ts = marks6[0][1], marks6[1]
        if self.agent_first_received_ms is None or received < self.agent_first_received_ms:
            self.agent_first_received_ms = received
        if self.agent_last_appended_ms is None or ts > self.agent_last_appended_ms:
            self.agent_last_appended_ms = ts

    def agent_span(self) -> float | None:
        """Seconds from the first event the agent received to the broker's append of its last
        recommendation, by the agent's and the broker's clocks (this box's); None without
        timing headers on a LogAppendTime topic. Unlike the span between the first and the last
        recommendation this reader sees, it does not shrink to nothing when a read-committed
        reader gets a whole backlog's output in one poll (one transaction, or one fetch)."""
        if self.agent_first_received_ms is None or self.agent_last_appended_ms is None:
            return None
        return (self.agent_last_appended_ms - self.agent_first_received_ms) / 1000.0

    def _on_dead(self, raw_env: bytes) -> None:
        try:
            env = orjson.loads(raw_env)
            ev = orjson.loads(base64.b64decode(env["raw"]))
            eid = ev["event_id"]
        except Exception:
            return
        if eid in self.index:
            self.n_dead += 1  # the event is accounted for (not lost); it is not "covered"

    def lost(self) -> int:
        return max(0, self.n_sent - self.n_covered - self.n_dead)


def _timing_marks(record: Any) -> tuple[tuple[float, ...], float] | None:
    """A recommendation's ``attnrec-timing`` milestones (six epoch ms) and the broker's append
    time; None without the header, on a topic not stamped with LogAppendTime, or malformed."""
    raw = dict(record.headers() or ()).get("attnrec-timing")
    ts_type, ts = record.timestamp()
    if raw is None or ts_type != _LOG_APPEND_TIME:
        return None
    try:
        marks = tuple(float(x) for x in raw.split(b","))
    except ValueError:
        return None
    return (marks, float(ts)) if len(marks) == 6 else None


def _end_offset(consumer: Any, tp: Any, deadline: float) -> int:
    """The partition's high watermark; a topic created a moment ago may not have a leader yet."""
    from confluent_kafka import KafkaException

    while True:
        try:
            return int(consumer.get_watermark_offsets(tp, timeout=5)[1])
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
