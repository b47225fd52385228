"""What the fault tests share (tests/integration/test_faults.py, test_exactly_once.py): a
scenario's world, and the checks of state and output after a fault.

Every event has a unique ``event_id`` and a unique ``ts`` (the buffer entry is
``<ts>|<type>|<item>``, so the ts names the event in Redis). :func:`check_state` compares what
the broker acknowledged to the producer with every user's Redis buffer — each acknowledged
event exactly once, nothing else, newest first; :func:`check_recs` reads the ``recs`` topic as a
``read_committed`` consumer: every acknowledged event covered by a recommendation whose trigger
is that event or a later one of the same user (none missing), no trigger twice (none
repeated), and recommendations resumed after the fault.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
import redis
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import decode_entry

from attnrec import schemas
from attnrec.kafka_util import make_consumer
from attnrec.redis_util import redis_sync
from attnrec.settings import Settings
from tests.feeding import Feeder
from tests.helpers import WorkerProc

SESSION_TIMEOUT_S = 10


class Scenario:
    """One fault test's world: settings with its own topics (created), a Redis client, and the
    workers and feeders it starts; :meth:`close` ends them all, whatever happened."""

    def __init__(self, s: Settings, known: list[str], home: Path) -> None:
        self.s, self.known, self.home = s, known, home
        self.r = redis_sync(s)
        self.workers: list[WorkerProc] = []
        self.feeders: list[Feeder] = []

    def worker(self, name: str) -> WorkerProc:
        w = WorkerProc(self.s, self.home, name)
        self.workers.append(w)
        return w

    def feeder(self, **kw: Any) -> Feeder:
        """A :class:`Feeder` of the model's known items (``kw``: e.g. ``n_users``)."""
        f = Feeder(self.s, self.known, **kw)
        self.feeders.append(f)
        return f

    def close(self) -> None:
        """Close the feeders, then stop the workers (SIGKILL when one does not stop in time)."""
        with ExitStack() as stack:  # every callback runs, even after one raised
            stack.callback(self.r.close)
            for w in self.workers:
                stack.callback(w.terminate)
            for f in self.feeders:
                stack.callback(f.close)


# ----------------------------------------------------------------------------- checking
def buffers_of(r: redis.Redis, users: list[str]) -> dict[str, list[Any]]:
    p = r.pipeline(transaction=False)
    for u in users:
        p.lrange(user_keys(u)[0], 0, -1)
    return {u: [decode_entry(x) for x in raw] for u, raw in zip(users, p.execute(), strict=True)}


def wait_applied(r: redis.Redis, want: dict[str, int], timeout: float) -> float:
    """Wait until each user's buffer holds at least ``want[u]`` entries; returns when."""
    deadline = time.monotonic() + timeout
    users = list(want)
    while True:
        try:
            p = r.pipeline(transaction=False)
            for u in users:
                p.llen(user_keys(u)[0])
            if all(n >= want[u] for u, n in zip(users, p.execute(), strict=True)):
                return time.time()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, redis.exceptions.ClusterError,
                redis.exceptions.RedisClusterException):  # Redis restarting, a cluster's slots moving
            pass
        if time.monotonic() > deadline:
            return -1.0
        time.sleep(0.2)


def check_state(r: redis.Redis, feeder: Feeder, *, cap: int | None = None) -> dict[str, Any]:
    """Compare the acknowledged events with the buffers: lost, duplicated, unknown, order."""
    expected = feeder.expected()
    users = sorted({ev.user_id for ev in feeder.events.values()})
    bufs = buffers_of(r, users)
    all_ts = {u: set() for u in users}
    for ev in feeder.events.values():
        all_ts[ev.user_id].add(ev.ts)
    lost = dup = unknown = misordered = 0
    examples: list[str] = []
    for u in users:
        got = [e.ts for e in bufs[u]]
        counts = Counter(got)
        d = sum(c - 1 for c in counts.values())
        want = [e.ts for e in expected.get(u, [])]
        if cap is not None:
            want = sorted(want)[-cap:]
        missing = set(want) - set(counts)
        extra = set(counts) - all_ts[u]
        lost += len(missing)
        dup += d
        unknown += len(extra)
        if got != sorted(got, reverse=True):
            misordered += 1
        if (missing or d or extra) and len(examples) < 5:
            examples.append(
                f"{u}: missing {sorted(missing)[:5]} dup {[t for t, c in counts.items() if c > 1][:5]} extra {sorted(extra)[:5]}"
            )
    return {
        "sent": len(feeder.events),
        "acked": len(feeder.acked),
        "unacked": len(feeder.events) - len(feeder.acked),
        "in_state": sum(len(b) for b in bufs.values()),
        "lost": lost,
        "duplicated_in_state": dup,
        "unknown_in_state": unknown,
        "users_misordered": misordered,
        "examples": examples,
    }


def read_topic(s: Any, topic: str, done: Callable[[list[Any]], bool], timeout: float, linger_s: float = 2.0) -> list[Any]:
    """Every committed record of ``topic`` from the start, until ``done(records)`` (and
    ``linger_s`` more, for late repeats) or the timeout."""
    c = make_consumer(s, topic, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=300, max_records=10_000).values():
                out.extend(recs)
            if done(out):
                deadline = min(deadline, time.monotonic() + linger_s)
                done = _always
    finally:
        c.close()
    return out


def _always(recs: list[Any]) -> bool:
    return False


def check_recs(s: Any, feeder: Feeder, fault_at: float, timeout: float = 60) -> dict[str, Any]:
    """The ``recs`` topic, read committed, against the acknowledged events: ``recs_missing``
    counts events no recommendation covers (a user's events after the last one that triggered a
    recommendation), ``recs_repeated`` recommendations whose trigger already had one; recovery
    = the first recommendation for an event sent after the fault."""
    expected = feeder.expected()
    last = {u: evs[-1].event_id for u, evs in expected.items()}

    def done(recs: list[Any]) -> bool:
        got = {orjson.loads(m.value)["trigger_event_id"] for m in recs}
        return all(e in got for e in last.values())

    recs = [orjson.loads(m.value) for m in read_topic(s, s.recs_topic, done, timeout)]
    triggers = Counter(p["trigger_event_id"] for p in recs)
    missing = 0
    for evs in expected.values():
        hit = [k for k, ev in enumerate(evs) if ev.event_id in triggers]
        missing += len(evs) - (hit[-1] + 1 if hit else 0)
    after = [p["emitted_ts"] / 1000 for p in recs if feeder.sent_at.get(p["trigger_event_id"], 0) > fault_at]
    return {
        "recs": len(recs),
        "recs_missing": missing,
        "recs_repeated": sum(c - 1 for c in triggers.values()),
        "users_without_final_rec": sum(1 for e in last.values() if e not in triggers),
        "recovery_s": round(min(after) - fault_at, 2) if after else None,
        "personalised": sum(1 for p in recs if not p["fallback"]),
        "recs_invalid": sum(1 for p in recs if schemas.validate("recs", p)),  # against attnrec/schemas/recs.v1.json
    }


def metric(w: WorkerProc, name: str) -> float:
    try:
        code, body = w.get("/metrics", timeout=5)
    except OSError:
        return float("nan")
    total = 0.0
    for line in body.decode().splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_progress(r: redis.Redis, feeder: Feeder, sent: int, timeout: float = 90) -> None:
    """Wait until ``sent`` events were produced and the worker has applied some of them, so
    the fault lands in the middle of the stream."""
    deadline = time.monotonic() + timeout
    users = [feeder.user(i) for i in range(feeder.n_users)]
    while time.monotonic() < deadline:
        p = r.pipeline(transaction=False)
        for u in users:
            p.llen(user_keys(u)[0])
        if feeder.seq >= sent and sum(p.execute()) >= 100:
            return
        time.sleep(0.05)
    raise AssertionError(f"no progress before the fault: {feeder.seq} sent")


def finish(
    name: str, report: dict[str, Any], state: dict[str, Any], recs: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    row = {**state, **recs, **extra}
    report[name] = row
    print(f"\n{name}: {json.dumps(row, sort_keys=True)}")
    return row


def assert_exact(row: dict[str, Any], logs: str) -> None:
    """Exactly once in state and, read committed, in the output."""
    assert row["lost"] == 0 and row["duplicated_in_state"] == 0 and row["unknown_in_state"] == 0, f"{row}\n{logs}"
    assert row["recs_missing"] == 0 and row["recs_repeated"] == 0, f"output not exactly once: {row}\n{logs}"
    assert row["users_misordered"] == 0, f"buffers not newest first: {row}"
    assert row["users_without_final_rec"] == 0, f"recommendations did not resume: {row}\n{logs}"
    assert row["recovery_s"] is not None
    assert row["recs_invalid"] == 0, f"recommendations not valid under their schema: {row}"


