"""The bench's load: synthetic click events, the users' pre-filled buffers, and the generator's
own ceiling.

Events draw users uniformly and items Zipf-like from the served model's own vocabulary, so
every event is scored (none falls back to popularity). They are serialised in chunks ahead of
sending because the generator shares the box with the worker, Kafka and Redis: every
microsecond it spends per event is taken from what is measured (:func:`generator_ceiling`
measures it alone; its CPU per event is reported with every run).

Each user's buffer is pre-filled to ``buffer_len`` entries first (:func:`prefill`): the steady
state of an active user, where the model sees full ``max_len`` windows. Entries are written in
the worker's own format (:func:`attnrec.stream.core.inputs.format_entry`) under the worker's keys
(:func:`attnrec.stream.core.buffer.user_keys`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import orjson

from attnrec.redis_util import redis_sync
from attnrec.settings import Settings

from .host import cpu_seconds, loadavg

__all__ = ["EVENT_TYPES", "EventSource", "bench_users", "prefill", "redis_bytes_per_user", "cleanup_users",
           "generator_ceiling"]

log = logging.getLogger(__name__)

#: Event types drawn uniformly from this list (so views and clicks dominate).
EVENT_TYPES = ("view", "view", "view", "click", "click", "like", "cart", "purchase", "gift", "share")
#: Socket timeout of the bench's Redis calls: a pipeline of thousands of users' keys may queue behind
#: a worker's Lua calls on a saturated box, which took seconds (the worker's own default is 5 s).
REDIS_TIMEOUT_S = 60.0


class EventSource:
    """Synthetic click events over a given item vocabulary, pre-serialised in chunks.

    Item popularity is Zipf-like (p ~ 1 / (rank + 10)), users uniform; event ids are unique
    per source. Yields ``(event_id, user_id, key, value)``.
    """

    def __init__(self, items: Sequence[str], users: Sequence[str], seed: int = 7, chunk: int = 8192) -> None:
        self.items = list(items)
        self.users = list(users)
        self.rng = np.random.default_rng(seed)
        w = 1.0 / (np.arange(len(self.items)) + 10.0)
        self.p = w / w.sum()
        self.chunk = chunk
        self.tag = uuid.uuid4().hex[:10]
        self.n = 0

    def _chunk(self) -> list[tuple[str, str, bytes, bytes]]:
        k = self.chunk
        it = self.rng.choice(len(self.items), size=k, p=self.p)
        us = self.rng.integers(0, len(self.users), size=k)
        ty = self.rng.integers(0, len(EVENT_TYPES), size=k)
        now = int(time.time() * 1000)
        out = []
        for j in range(k):
            eid = f"b{self.tag}-{self.n + j}"
            user = self.users[int(us[j])]
            value = orjson.dumps({"event_id": eid, "user_id": user, "item_id": self.items[int(it[j])],
                                  "event_type": EVENT_TYPES[int(ty[j])], "ts": now + j // 50,
                                  "context": {"session_id": "bench"}})  # fmt: skip
            out.append((eid, user, user.encode(), value))
        self.n += k
        return out

    def one_per_user(self) -> Iterator[tuple[str, str, bytes, bytes]]:
        """One event for each user, in user order (item by popularity), serialised like the rest."""
        items = self.rng.choice(len(self.items), size=len(self.users), p=self.p)
        ts = int(time.time() * 1000)
        for n, (user, i) in enumerate(zip(self.users, items, strict=True)):
            eid = f"w{self.tag}-{n}"
            ev = {"event_id": eid, "user_id": user, "item_id": self.items[int(i)], "event_type": "view", "ts": ts}
            yield eid, user, user.encode(), orjson.dumps(ev)

    def __iter__(self) -> Iterator[tuple[str, str, bytes, bytes]]:
        while True:
            yield from self._chunk()


def bench_users(prefix: str, n: int) -> list[str]:
    """``n`` user ids under ``prefix`` (their keys are ``{u:<prefix>...}``, see :func:`cleanup_users`)."""
    return [f"{prefix}u{i}" for i in range(n)]


def prefill(s: Settings, users: Sequence[str], items: Sequence[str], length: int, seed: int = 1) -> None:
    """Replace each user's buffer by ``length`` view entries of random items, one second apart
    from an hour ago (the worker's encoding, newest first)."""
    from ...stream.core.buffer import user_keys
    from ...stream.core.entries import format_entry

    r = redis_sync(s, timeout_s=REDIS_TIMEOUT_S)
    try:
        rng = np.random.default_rng(seed)
        now = int(time.time() * 1000) - 3_600_000
        p = r.pipeline(transaction=False)
        for n, u in enumerate(users, start=1):
            picks = rng.integers(0, len(items), size=length)
            entries = [format_entry(now + j * 1000, "view", items[int(i)]) for j, i in enumerate(picks)]
            key = user_keys(u)[0]
            p.delete(key)
            p.lpush(key, *entries)  # newest first after LPUSH of oldest-first entries
            p.expire(key, s.buffer_ttl_s)
            if n % 200 == 0:
                p.execute()
        p.execute()
    finally:
        r.close()


#: a stored recommendation of the usual size (10 items, 3 reasons), for memory figures
TYPICAL_REC = orjson.dumps({
    "user_id": "u", "items": [{"item_id": f"sku-{1000 + i}", "score": 7.123456} for i in range(10)],
    "model_version": "20261128T0930-ab12cd", "fallback": False, "trigger_event_id": "0" * 32,
    "event_ts": 0, "emitted_ts": 18, "because": [{"item_id": "sku-42", "event_type": "purchase", "weight": 0.41}] * 3,
})  # fmt: skip


async def write_as_worker(buffers: Any, users: Sequence[str], events_per_user: int, source: str, ts0: int) -> None:
    """``events_per_user`` clicks for each of ``users`` written through the worker's own apply
    script (``buffers``: a :class:`RedisBuffers`; 256 events per call, from ``source``'s eight
    partitions), then a :data:`TYPICAL_REC` each: a user's state as a serving worker leaves it."""
    from attnrec.events import ClickEvent

    batch: list[Any] = []
    off = 0
    for k in range(events_per_user):
        for u, uid in enumerate(users):
            off += 1
            ev = ClickEvent(uuid.uuid4().hex, uid, f"sku-{(u * 31 + k) % 50000}", "click", ts0 + k)
            batch.append((ev, f"{source}:{u % 8}", off))
            if len(batch) == 256:
                await buffers.apply(batch)
                batch = []
    if batch:
        await buffers.apply(batch)
    await buffers.store_recs({uid: TYPICAL_REC for uid in users})


def redis_bytes_per_user(s: Settings, users: Sequence[str], sample: int = 200) -> float | None:
    """Mean ``MEMORY USAGE`` of a sample of the users' keys (all four of each); None when Redis
    does not allow the command."""
    from ...stream.core.buffer import user_keys

    r = redis_sync(s, timeout_s=REDIS_TIMEOUT_S)
    try:
        picked = list(users)[:: max(1, len(users) // sample)][:sample]
        p = r.pipeline(transaction=False)
        for u in picked:
            for k in user_keys(u):
                p.memory_usage(k, samples=0)
        try:
            vals = p.execute()
        except Exception as exc:
            log.warning("MEMORY USAGE unavailable: %s", exc)
            return None
        return float(sum(v or 0 for v in vals)) / max(1, len(picked))
    finally:
        r.close()


def cleanup_users(s: Settings, prefix: str) -> int:
    """Delete the bench users' keys (``{u:<prefix>*}``); returns how many."""
    r = redis_sync(s, timeout_s=REDIS_TIMEOUT_S)
    try:
        n = 0
        batch: list[bytes] = []
        for k in r.scan_iter(match="{u:" + prefix + "*", count=2000):
            batch.append(k)
            if len(batch) >= 1000:
                n += r.unlink(*batch)
                batch = []
        if batch:
            n += r.unlink(*batch)
        return n
    finally:
        r.close()


def generator_ceiling(s: Settings, seconds: float = 5.0, items: Sequence[str] | None = None) -> dict[str, Any]:
    """The load generator alone: events/s it produces (and the broker acks) at max rate, to a
    throw-away topic."""
    import psutil

    from attnrec.kafka_util import admin_client, ensure_topics

    from .clients import produce, rd_producer

    topic = f"bench-gen-{uuid.uuid4().hex[:8]}"
    ensure_topics(s, [topic])
    src = iter(EventSource(items or [f"item-{i}" for i in range(2, 12_002)], bench_users("gen-", 5000)))
    p = rd_producer(s, linger_ms=5)
    me = psutil.Process()
    c0, t0, n = cpu_seconds(me, children=False), time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        for _ in range(500):
            _, _, key, value = next(src)
            produce(p, topic, key, value)
        p.poll(0)
        n += 500
    p.flush(60)
    wall = time.perf_counter() - t0
    try:
        a = admin_client(s)
        a.delete_topics([topic])
        a.close()
    except Exception as exc:
        log.debug("could not delete %s: %s", topic, exc)
    return {"events": n, "seconds": round(wall, 2), "events_per_s": round(n / wall, 1),
            "cpu_cores": round((cpu_seconds(me, children=False) - c0) / wall, 2), "load_avg": loadavg()}  # fmt: skip
