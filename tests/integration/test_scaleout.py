"""Scale-out on one machine: `attnrec worker` processes in one consumer group split the partitions.

Two workers share an 8-partition topic; a third joins while events flow; one of the first two
is stopped (SIGTERM) while events still flow. Afterwards every user's Redis buffer must hold
exactly the events sent to it — none lost, none applied twice — in the order they were sent,
and each user's latest recommendation must be triggered by its last event.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import redis
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import decode_entry

from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics
from attnrec.redis_util import redis_sync
from tests.feeding import T0, Feeder
from tests.helpers import WorkerProc, settings_for

pytestmark = pytest.mark.integration

PARTITIONS = 8
USERS = 240
RATE = 250.0  # events/s offered while workers join and leave


def so_event(n: int) -> ClickEvent:
    """The ``n``-th event of the load: users round-robin, ``ts`` in send order per user."""
    u = f"so-{n % USERS}"
    seq = n // USERS
    return ClickEvent(f"{u}-{seq}", u, f"item-{(seq * 7 + n) % 90}", "click", T0 + seq)


def assignments(workers: list[WorkerProc]) -> list[int]:
    out = []
    for w in workers:
        try:
            code, body = w.get("/readyz")
            out.append(int(json.loads(body)["assigned_partitions"]))
        except (OSError, ValueError, KeyError):
            out.append(-1)
    return out


def wait_split(workers: list[WorkerProc], timeout: float = 60.0) -> list[int]:
    """Wait until the live workers together own all partitions, each at least one."""
    deadline = time.monotonic() + timeout
    got: list[int] = []
    while time.monotonic() < deadline:
        got = assignments(workers)
        if sum(got) == PARTITIONS and all(n > 0 for n in got):
            return got
        time.sleep(0.5)
    tails = "\n".join(w.tail(1500) for w in workers)
    raise AssertionError(f"partitions not split across {len(workers)} workers in {timeout}s: {got}\n{tails}")


def test_workers_join_and_leave_under_load(
    stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path
) -> None:
    s = settings_for(stack, names, registry_with_model, partitions=PARTITIONS, buffer_len=1000)
    ensure_topics(s)
    r = redis_sync(s)
    started = time.monotonic()
    w1, w2 = WorkerProc(s, tmp_path, "w1"), WorkerProc(s, tmp_path, "w2")
    workers = [w1, w2]
    feeder = Feeder(s)
    try:
        w1.wait_ready()
        w2.wait_ready()
        split2 = wait_split([w1, w2])
        feeder.start(rate=RATE, make=so_event)
        time.sleep(5)
        w3 = WorkerProc(s, tmp_path, "w3")  # joins under load
        workers.append(w3)
        w3.wait_ready()
        split3 = wait_split([w1, w2, w3])
        time.sleep(4)
        assert w1.terminate() == 0, w1.tail()  # leaves under load: finishes its batch, hands over
        split_after = wait_split([w2, w3])
        time.sleep(4)
        feeder.stop()
        assert feeder.error is None, feeder.error
        sent = feeder.sent_by_user()
        total = len(feeder.events)
        assert total > 2000, total

        # wait until the remaining workers have applied everything
        deadline = time.monotonic() + 60
        applied = 0
        while time.monotonic() < deadline:
            pipe = r.pipeline(transaction=False)
            for u in sent:
                pipe.llen(user_keys(u)[0])
            applied = sum(pipe.execute())
            if applied >= total:
                break
            time.sleep(0.5)
        time.sleep(1.0)  # a late duplicate would show up now

        lost, dup, misordered = [], [], []
        for u, evs in sent.items():
            got = [decode_entry(x).ts for x in r.lrange(user_keys(u)[0], 0, -1)][::-1]  # oldest first
            want = [e.ts for e in evs]
            if len(got) != len(set(got)):
                dup.append(u)
            if set(want) - set(got):
                lost.append(u)
            if got != want:
                misordered.append(u)
        tails = "\n".join(w.tail(2000) for w in workers)
        assert not lost and not dup, f"lost: {lost[:5]} duplicated: {dup[:5]} (applied {applied}/{total})\n{tails}"
        assert not misordered, f"per-user order broken for {misordered[:5]}"

        # each user's latest recommendation was triggered by its last event
        deadline = time.monotonic() + 20
        stale: list[str] = []
        while time.monotonic() < deadline:
            stale = []
            for u, evs in sent.items():
                raw = r.get(user_keys(u)[3])
                if raw is None or json.loads(raw)["trigger_event_id"] != evs[-1].event_id:
                    stale.append(u)
            if not stale:
                break
            time.sleep(0.5)
        assert not stale, f"latest recommendation not from the last event for {stale[:5]}"
        assert time.monotonic() - started < 150, "scale-out test took too long"
        print(f"scale-out: {total} events, splits {split2} -> {split3} -> {split_after}")
    finally:
        feeder.close()
        for w in workers:
            w.terminate(timeout=30)


def test_redis_memory_per_user_for_sizing(stack: Any) -> None:
    """The per-user Redis figure of docs/DEPLOY.md ("Sizing"), re-measured: a user at steady state
    (buffer full at 200, dedupe set full at 512) with the default settings and a stored recommendation.

    Run ``pytest -s tests/integration/test_scaleout.py -k memory`` to print the figures.
    """
    import asyncio
    import uuid

    import redis.asyncio as aioredis
    from attnrec.apps.bench.load import write_as_worker
    from attnrec.stream.core.buffer import RedisBuffers

    from attnrec.settings import Settings

    d = Settings()
    tag = uuid.uuid4().hex[:8]
    n_users = 60

    async def fill(per_user: int, window: int) -> list[str]:
        client = aioredis.Redis.from_url(stack.redis_url)
        b = RedisBuffers(client, max_len=d.buffer_len, ttl_s=d.buffer_ttl_s, dedupe_window=window)
        await b.mark_state("test")
        users = [f"mem-{tag}-{per_user}-{window}-{u:05d}" for u in range(n_users)]
        await write_as_worker(b, users, per_user, f"clicks-{tag}", T0)
        await client.aclose()
        return users

    r = redis.Redis.from_url(stack.redis_url)
    figures = {}
    for per_user, window in ((20, d.dedupe_window), (200, d.dedupe_window), (600, d.dedupe_window), (600, 64)):
        users = asyncio.run(fill(per_user, window))
        total = sum(r.memory_usage(k, samples=0) or 0 for uid in users for k in user_keys(uid))
        figures[(per_user, window)] = total / n_users / 1024
        r.delete(*[k for uid in users for k in user_keys(uid)])
    print("redis KiB per user (MEMORY USAGE of the user's keys) by (events, dedupe window):",
          {k: round(v, 1) for k, v in figures.items()})  # fmt: skip
    # docs/DEPLOY.md, Sizing: 2.6 / 34.5 / 78.6 KiB per key sum, and the window-64 user far below
    moved = "the figure moved: update docs/DEPLOY.md (Sizing)"
    assert 1.5 < figures[(20, d.dedupe_window)] < 5, moved
    assert 5 < figures[(200, d.dedupe_window)] < 45, moved
    # both per-user structures are capped (buffer_len entries, dedupe_window ids): no growth
    assert figures[(600, d.dedupe_window)] < 1.2 * figures[(200, d.dedupe_window)], moved
    assert figures[(600, 64)] < 16, moved
