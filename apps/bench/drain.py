"""Backlog drain: how fast an agent works through events that are already waiting.

``N`` events are produced to fresh topics before any agent consumes them; then the agent (the
worker, or the null agent) starts and the tracker times its recommendations from the first to
the last: ``events/s = N / (last - first)``. The agent's start-up (group join, model load) is
outside the timed span: the span runs from the first event the agent received to the broker's
append of its last recommendation (the ``attnrec-timing`` header and the recs topic's
``LogAppendTime``), so a read-committed reader that gets a whole small backlog's output in one
poll cannot shrink it to nothing. The users are the session's, with pre-filled buffers, so the worker
runs in its steady state (full windows). The worker and the null agent drain one after the
other on the same broker; their ratio is what Redis, the model and the logic cost under a
backlog, where batching must win.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from attnrec.errors import AttnrecError
from attnrec.kafka_util import ensure_topics
from attnrec.settings import Settings

from .clients import produce, rd_producer
from .host import cpu_seconds, loadavg
from .load import EventSource
from .run import batch_sizes
from .tracker import CoverageTracker
from .worker import WorkerHandle, api_token, scrape

__all__ = ["drain_once"]

log = logging.getLogger(__name__)


def drain_once(base: Settings, *, registry: Path, items: Sequence[str], users: Sequence[str], events: int,
               agent: str, log_dir: Path, seed: int = 7, timeout_s: float = 300.0) -> dict[str, Any]:  # fmt: skip
    """Produce ``events`` to fresh topics, then start ``agent`` and time its drain."""
    tag = uuid.uuid4().hex[:6]
    s = base.model_copy(update={
        "clicks_topic": f"drain-{tag}-clicks", "recs_topic": f"drain-{tag}-recs", "dlq_topic": f"drain-{tag}-clicks.dlq",
        "updates_topic": f"drain-{tag}-model-updates", "group_id": f"attnrec-drain-{tag}", "registry": registry,
        "timing_headers": True,
    })  # fmt: skip
    ensure_topics(s, configs={"message.timestamp.type": "LogAppendTime"})
    tracker = CoverageTracker(s)
    tracker.track_agent_span = True
    tracker.start()
    tracker.t_measure = 0.0  # every covered event counts
    src = iter(EventSource(items, users, seed=seed))
    producer = rd_producer(s, linger_ms=5)
    for _ in range(events):
        eid, user, key, value = next(src)
        tracker.sent(eid, user, time.perf_counter(), True)
        produce(producer, s.clicks_topic, key, value)
    if producer.flush(120):
        raise AttnrecError("the drain's backlog could not be produced within 120 s")
    load_before = loadavg()
    w = WorkerHandle(s, log_dir, agent=agent, name=f"drain-{agent}")
    try:
        w.wait_ready()
        proc = psutil.Process(w.pid)
        m0, c0 = scrape(w.url("/metrics"), api_token(s)), cpu_seconds(proc)
        deadline = time.monotonic() + timeout_s
        last, changed = tracker.done, time.monotonic()
        while tracker.done < events and time.monotonic() < deadline and time.monotonic() - changed < 30:
            time.sleep(0.05)
            if tracker.done != last:
                last, changed = tracker.done, time.monotonic()
        m1, c1 = scrape(w.url("/metrics"), api_token(s)), cpu_seconds(proc)
    finally:
        w.stop()
        tracker.stop()
    span = tracker.agent_span()
    if tracker.n_covered and not span:
        raise AttnrecError(f"the {agent} drain's recommendations carry no timing header to time it by")
    span = span or 1.0  # nothing covered: 0 events/s
    reader_span = (tracker.last_cover or 0.0) - (tracker.first_cover or 0.0)
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in set(m1) | set(m0)}
    done = d.get("attnrec_events_total", 0.0)
    res = {"agent": agent, "events": events, "covered": tracker.n_covered, "lost": tracker.lost(),
           "seconds": round(span, 3), "reader_seconds": round(reader_span, 3), "events_per_s": round(tracker.n_covered / span, 1),
           "worker_cpu_us_per_event": round(1e6 * (c1 - c0) / done, 1) if done else None,
           "batch_sizes": batch_sizes(d, "attnrec_batch_size"), "load_avg_before": load_before,
           "load_avg_after": loadavg()}  # fmt: skip
    log.info("drain %s: %d events in %.2f s = %.0f/s (lost %d), load %s", agent, events, span, res["events_per_s"],
             res["lost"], res["load_avg_after"])
    return res
