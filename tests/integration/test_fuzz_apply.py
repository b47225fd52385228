"""The Redis apply script against the rules it promises, on the real Redis, for generated
streams: producer retries (an event sent again, at a later offset of its partition),
redeliveries (a partition consumed again from an earlier offset, after a crash or a
rebalance), partitions interleaved in any order, and any batch boundaries.

The rules (``attnrec.stream.core.buffer.APPLY_LUA``), from what a consumer of the partitions saw so far:

- a record at or below the highest offset already seen on its partition is a redelivery: 0;
- otherwise an event_id already applied (at another offset) is a producer's retry: 2;
- otherwise the event is applied: 1, pushed on its user's buffer (newest first, at most
  ``max_len``), and ``#seq`` counts it.

So every event ever delivered is in its user's buffer exactly once, in the order it was first
applied, whatever the duplicates, replays and batch boundaries. Bounded in ``make test`` (the
"ci" profile); ``HYPOTHESIS_PROFILE=long`` runs many more streams.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from attnrec.stream.core.buffer import APPLIED, REDELIVERED, RETRY, RedisBuffers, user_keys
from attnrec.stream.core.entries import decode_entry
from hypothesis import given
from hypothesis import strategies as st

from attnrec.events import ClickEvent

pytestmark = pytest.mark.integration

USERS = ("ana", "bo", "cy")
T0 = 1_700_000_000_000  # event i happens at T0 + i: its buffer entry names it


@dataclass(frozen=True)
class Rec:
    partition: int
    offset: int
    event: ClickEvent


@st.composite
def streams(draw: Any) -> tuple[list[list[Rec]], int]:
    """Per partition, the records a consumer receives (with replays), and the buffer length."""
    n = draw(st.integers(min_value=1, max_value=30))
    tag = uuid.uuid4().hex[:6]
    events = [ClickEvent(f"e{i}", f"{tag}-{draw(st.sampled_from(USERS))}", f"item{draw(st.integers(0, 9))}", "click",
                         T0 + i) for i in range(n)]  # fmt: skip
    part_of = {u: k % 2 for k, u in enumerate(sorted({e.user_id for e in events}))}  # a user's events: one partition
    logs: dict[int, list[Rec]] = defaultdict(list)
    sent: list[ClickEvent] = []
    for ev in events:  # produced in order; now and then the producer retries an earlier event
        for again in draw(st.lists(st.sampled_from(sent), max_size=2)) if sent else []:
            p = part_of[again.user_id]
            logs[p].append(Rec(p, len(logs[p]), again))
        p = part_of[ev.user_id]
        logs[p].append(Rec(p, len(logs[p]), ev))
        sent.append(ev)
    consumed: list[list[Rec]] = []
    for _, log in sorted(logs.items()):  # each partition read through, rewound to earlier offsets now and then
        seen: list[Rec] = []
        pos, rewinds = 0, 0
        while pos < len(log):
            step = draw(st.integers(min_value=1, max_value=len(log) - pos))
            seen += log[pos: pos + step]
            pos += step
            if rewinds < 3 and draw(st.booleans()):  # at most three replays per partition
                rewinds += 1
                pos = draw(st.integers(min_value=0, max_value=pos))
        consumed.append(seen)
    return consumed, draw(st.integers(min_value=2, max_value=40))


def expected(order: list[Rec], max_len: int) -> tuple[list[int], dict[str, list[str]], dict[str, int]]:
    """The codes, buffers (newest first, event ids) and #seq the rules give for this order."""
    high: dict[int, int] = {}
    applied: set[str] = set()
    codes: list[int] = []
    bufs: dict[str, list[str]] = defaultdict(list)
    for r in order:
        if r.offset <= high.get(r.partition, -1):
            codes.append(REDELIVERED)
        elif r.event.event_id in applied:
            codes.append(RETRY)
        else:
            codes.append(APPLIED)
            applied.add(r.event.event_id)
            bufs[r.event.user_id].insert(0, r.event.event_id)
        high[r.partition] = max(high.get(r.partition, -1), r.offset)
    seq = {u: len(b) for u, b in bufs.items()}
    return codes, {u: b[:max_len] for u, b in bufs.items()}, seq


@given(streams(), st.data())
def test_the_apply_script_keeps_every_event_once_whatever_the_duplicates_and_batches(
        stack: Any, case: tuple[list[list[Rec]], int], data: st.DataObject) -> None:  # fmt: skip
    consumed, max_len = case
    order: list[Rec] = []  # partitions interleaved in any order, each in its own order
    queues = [list(q) for q in consumed]
    while any(queues):
        q = data.draw(st.sampled_from([q for q in queues if q]))
        order.append(q.pop(0))
    cuts = sorted(set(data.draw(st.lists(st.integers(min_value=1, max_value=max(1, len(order) - 1)), max_size=6))))
    batches = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)], strict=True) if order[a:b]]
    want_codes, want_bufs, want_seq = expected(order, max_len)

    async def run() -> tuple[list[int], dict[str, list[str]], dict[str, int]]:
        import redis.asyncio as aioredis
        from attnrec.stream.core.buffer import STATE_KEY

        client = aioredis.from_url(stack.redis_url)
        try:
            await client.set(STATE_KEY, "fuzz")
            buffers = RedisBuffers(client, max_len=max_len, dedupe_window=64)
            codes: list[int] = []
            for batch in batches:
                res = await buffers.apply([(r.event, f"clicks:{r.partition}", r.offset) for r in batch])
                codes += res.codes
                assert res.applied == [c == APPLIED for c in res.codes]
            users = {r.event.user_id for r in order}
            bufs = {u: [decode_entry(e) for e in await client.lrange(user_keys(u)[0], 0, -1)] for u in users}
            seq = {u: int(await client.hget(user_keys(u)[2], "#seq") or 0) for u in users}
            await client.delete(*[k for u in users for k in user_keys(u)])
            return codes, {u: [f"e{b.ts - T0}" for b in v] for u, v in bufs.items() if v}, seq
        finally:
            await client.aclose()

    codes, bufs, seq = asyncio.run(run())
    assert codes == want_codes, [(r.partition, r.offset, r.event.event_id) for r in order]
    assert bufs == want_bufs, "each user's buffer: its events once, newest first, as first applied"
    assert seq == want_seq
    delivered = {r.event.event_id for r in order}
    assert sum(want_seq.values()) == len(delivered), "every delivered event applied exactly once"
