"""Trending now: per-item popularity over the last ``TRENDING_WINDOW_S`` of stream time, kept by
the stream itself in Redis (shared by the workers), the cold-start fallback.

Each batch adds its events to the current time bucket of each scope — ``all`` (the whole
catalogue) and ``room:<room_id>`` for events with a ``context.room_id`` — as a sorted set per
bucket (``{trend:<scope>}:<bucket>``, one hash tag per scope, expiring after the window);
reading a scope is one script call (ZUNIONSTORE of the window's buckets, the top of it). Purchases and gifts weigh more than
views; impressions and skips count nothing. A batch that is retried counts twice: trending is
a popularity estimate, not an exactly-once ledger.

Time is the stream's: the window ends at the newest event time seen (an event stamped ahead of
the wall clock, clock skew, does not move it). The top list is re-read once a second and as soon
as the stream's time enters a new bucket, so a log replayed faster than it happened (a day in
minutes) still sees the trending of its own moment, not of a second of wall time earlier.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from attnrec.errors import TransientError
from attnrec.events import ClickEvent

from ..core.buffer import redis_errors
from ..core.stage import Batch, Stage

__all__ = ["TYPE_WEIGHT", "BUCKETS", "Counts", "Trending", "bucket_counts", "TrendingStage"]

log = logging.getLogger(__name__)

#: What one event adds to its item's trending score, by type (absent: 0).
TYPE_WEIGHT = {"view": 1.0, "click": 1.0, "other": 1.0, "like": 1.5, "share": 1.5, "cart": 2.0, "purchase": 3.0, "gift": 3.0}
#: Buckets per window.
BUCKETS = 30


class Counts:
    """Trending increments not yet written: (scope, bucket) -> item -> score. Buckets that left
    the window are dropped as new ones arrive, so the object stays bounded."""

    def __init__(self, bucket_ms: int, keep: int = BUCKETS) -> None:
        self.bucket_ms = bucket_ms
        self.keep = keep
        self.by_key: dict[tuple[str, int], dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self.newest_ts = 0

    def __bool__(self) -> bool:
        return bool(self.by_key)

    def add(self, events: Iterable[ClickEvent]) -> None:
        newest = self.newest_ts
        ahead = int(time.time() * 1000) + self.bucket_ms  # later than this is clock skew: no clock
        for ev in events:
            w = TYPE_WEIGHT.get(ev.event_type, 0.0)
            if newest < ev.ts <= ahead:
                newest = ev.ts
            if not w:
                continue
            b = ev.ts // self.bucket_ms
            self.by_key[("all", b)][ev.item_id] += w
            room = ev.context.get("room_id") if ev.context else None
            if isinstance(room, str) and room:
                self.by_key[(f"room:{room}", b)][ev.item_id] += w
        if newest // self.bucket_ms != self.newest_ts // self.bucket_ms:
            oldest = newest // self.bucket_ms - self.keep
            for k in [k for k in self.by_key if k[1] <= oldest]:
                del self.by_key[k]
        self.newest_ts = newest


def bucket_counts(events: Iterable[ClickEvent], bucket_ms: int) -> dict[tuple[str, int], dict[str, float]]:
    """(scope, bucket) -> item -> added score, for ``events``."""
    c = Counts(bucket_ms, keep=1 << 62)
    c.add(events)
    return c.by_key


# KEYS: bucket keys of one scope; ARGV: expire_s, then per key: n, then n (item, increment) pairs.
ADD_LUA = """
local j = 2
for i = 1, #KEYS do
  local n = tonumber(ARGV[j])
  j = j + 1
  for q = 1, n do
    redis.call('ZINCRBY', KEYS[i], ARGV[j + 1], ARGV[j])
    j = j + 2
  end
  redis.call('EXPIRE', KEYS[i], ARGV[1])
end
return #KEYS
"""

# KEYS: the window's bucket keys, then a scratch key; ARGV: n. The n best (member, score) pairs.
TOP_LUA = """
local tmp = KEYS[#KEYS]
redis.call('ZUNIONSTORE', tmp, #KEYS - 1, unpack(KEYS, 1, #KEYS - 1))
local r = redis.call('ZREVRANGE', tmp, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
redis.call('DEL', tmp)
return r
"""


class Trending:
    """Writes and reads the trending scores."""

    def __init__(self, client: aioredis.Redis, window_s: float) -> None:
        self.r = client
        self.window_ms = int(window_s * 1000)
        self.bucket_ms = max(1, self.window_ms // BUCKETS)
        self._top = client.register_script(TOP_LUA)
        self._add = client.register_script(ADD_LUA)
        self.latest: list[tuple[str, float]] = []  # the catalogue's top items at the last refresh
        self.now_ms = 0  # the stream's clock: the newest event time seen

    def key(self, scope: str, bucket: int) -> str:
        return "{trend:" + scope + "}:" + str(bucket)

    def counter(self) -> Counts:
        return Counts(self.bucket_ms)

    async def queue(self, pipe: Any, counts: Counts) -> None:
        """Queue ``counts``' increments on a pipeline (the caller executes it): one script call
        per scope with the increments as flat arguments (a ZINCRBY command each took the
        event loop ~15 µs per item to pack: a 10-15 ms stall every second at 1,000 events/s)."""
        self.now_ms = max(self.now_ms, counts.newest_ts)
        expire_s = int((self.window_ms + 2 * self.bucket_ms) / 1000) + 1
        per_scope: dict[str, tuple[list[str], list[Any]]] = {}
        for (scope, b), items in counts.by_key.items():
            keys, args = per_scope.setdefault(scope, ([], [expire_s]))
            keys.append(self.key(scope, b))
            args.append(len(items))
            for item, w in items.items():
                args += (item, w)
        for keys, args in per_scope.values():
            await self._add(keys=keys, args=args, client=pipe)

    async def top(self, scope: str = "all", n: int = 100, *, now_ms: int | None = None) -> list[tuple[str, float]]:
        """The ``n`` top items of ``scope`` over the window ending at ``now_ms`` (default the
        stream's clock), best first (ties: by item id, descending). Redis sums the window's
        buckets and ranks them; only the ``n`` best come back."""
        now = now_ms if now_ms is not None else (self.now_ms or int(time.time() * 1000))
        last = now // self.bucket_ms
        keys = [self.key(scope, b) for b in range(last - BUCKETS + 1, last + 1)]
        keys.append(self.key(scope, -1) + f":top:{uuid.uuid4().hex}")  # the script's scratch key (same slot)
        with redis_errors():
            got = await self._top(keys=keys, args=[n])
        return [(got[i].decode(), float(got[i + 1])) for i in range(0, len(got), 2)]

    async def refresh(self, n: int = 200) -> None:
        """Re-read :attr:`latest` (the whole catalogue's top ``n``): the worker does it once a
        second, off the hot path, and every batch reads the list it left."""
        self.latest = await self.top("all", n)


class TrendingStage(Stage):
    """Trending now on the batch path: a user the model cannot personalise gets the catalogue's
    trending items (minus what the batch keeps out) instead of the static popularity list; the
    batch's events are counted in memory and written, with the top list re-read, once a second
    (:meth:`run`): nothing of it waits on Redis in a batch, and a crash loses at most a second
    of an estimate."""

    name = "trending"
    every_s = 1.0  # how often the counts are written and the top list re-read (and at each new bucket)

    def __init__(self, client: aioredis.Redis, window_s: float, k: int = 10) -> None:
        self.trending = Trending(client, window_s)
        self.k = k
        self._counts = self.trending.counter()
        self._latest: list[tuple[str, float]] | None = None
        self._candidates: list[tuple[str, bytes]] = []
        self._bucket = -1  # the stream-time bucket of the last re-read
        self._due = asyncio.Event()  # the stream's time entered a new bucket: write and re-read now

    @property
    def candidates(self) -> list[tuple[str, bytes]]:
        """The latest top list as (item id, its UTF-8 bytes), best first."""
        if self._latest is not self.trending.latest:
            self._latest = self.trending.latest
            self._candidates = [(i, i.encode()) for i, _ in self._latest]
        return self._candidates

    async def rewrite(self, batch: Batch) -> None:
        cands = None
        for rec in batch.recs:
            if rec.fallback:
                cands = self.candidates if cands is None else cands
                items = batch.pick(cands, self.k, rec.user_id)
                if items:  # else the static popularity list stays
                    rec.payload["items"] = [{"item_id": i, "score": 0.0} for i in items]

    def observe(self, batch: Batch) -> None:
        """Count the batch's events (buckets older than the window are dropped, so the unwritten
        counts stay bounded)."""
        self._counts.add(batch.events)
        if self._counts.newest_ts // self.trending.bucket_ms > self._bucket:
            self._due.set()

    async def flush(self) -> None:
        """Write the counts gathered since the last flush (one round trip), then re-read the
        top list the next batches read."""
        counts, self._counts = self._counts, self.trending.counter()
        if counts:
            with redis_errors():
                async with self.trending.r.pipeline(transaction=False) as pipe:
                    await self.trending.queue(pipe, counts)
                    await pipe.execute()
        await self.trending.refresh()
        self._bucket = self.trending.now_ms // self.trending.bucket_ms

    async def run(self) -> None:
        while True:
            try:  # once a second, or when the stream's time enters a new bucket
                await asyncio.wait_for(self._due.wait(), self.every_s)
            except TimeoutError:
                pass
            self._due.clear()
            try:
                await self.flush()
            except TransientError as exc:  # estimates: the counts of that second are dropped
                log.warning("trending counts not written: %s", exc)
