"""Trending now: per-item popularity over the last ``TRENDING_WINDOW_S`` of stream time, kept by
the stream itself in Redis (shared by the workers), the cold-start fallback.

Each batch adds its events to the current time bucket of each scope — ``all`` (the whole
catalogue) and ``room:<room_id>`` for events with a ``context.room_id`` — as a sorted set per
bucket, expiring after the window. A scope's keys share a hash tag, so one script call (one
Redis Cluster slot) writes a scope, and one reads it: the union of the window's buckets, kept a
second (``{...}:top:<bucket>``) so that every worker's once-a-second read costs Redis one union
per second, not one per worker. On a Redis Cluster the whole catalogue, which every event
touches, is spread over :data:`SHARDS` shards by item (``{trend:all:<shard>}:<bucket>``; the top
of ``all`` is the best of the shards' tops, exactly), so its writes and unions are spread over
the masters; on one Redis it is one key per bucket (``{trend:all}:<bucket>``), like a room
(``{trend:room:<room_id>}:<bucket>``). Purchases and gifts weigh more than views; impressions
and skips count nothing. A batch that is retried counts twice: trending is a popularity
estimate, not an exactly-once ledger.

Time is the stream's: the window ends at the newest event time seen (an event stamped ahead of
the wall clock, clock skew, does not move it). The top list is re-read once a second and as soon
as the stream's time enters a new bucket (whose union is a new one, never the kept one), so a
log replayed faster than it happened (a day in minutes) still sees the trending of its own
moment, not of a second of wall time earlier.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from attnrec.errors import TransientError
from attnrec.events import ClickEvent
from attnrec.redis_util import eval_calls, is_cluster

from ..core.buffer import redis_errors
from ..core.stage import Batch, Stage

__all__ = ["TYPE_WEIGHT", "BUCKETS", "SHARDS", "Counts", "Trending", "bucket_counts", "shard_of", "TrendingStage"]

log = logging.getLogger(__name__)

#: What one event adds to its item's trending score, by type (absent: 0).
TYPE_WEIGHT = {"view": 1.0, "click": 1.0, "other": 1.0, "like": 1.5, "share": 1.5, "cart": 2.0, "purchase": 3.0, "gift": 3.0}
#: Buckets per window.
BUCKETS = 30
#: Shards of the whole-catalogue scope ``all`` (by item): its keys spread over this many slots.
SHARDS = 16
#: How long a scope's union of the window stays (ms): the workers' reads within it share it.
TOP_CACHE_MS = 1000


def shard_of(item_id: str) -> int:
    """The ``all`` shard an item's counts live in (a stable hash of its id)."""
    return zlib.crc32(item_id.encode()) % SHARDS


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

# KEYS: the window's bucket keys, then the union's key; ARGV: n, how long the union is kept (ms).
# The n best (member, score) pairs of the window, from the union another call made if it is there.
TOP_LUA = """
local top = KEYS[#KEYS]
if redis.call('EXISTS', top) == 0 then
  redis.call('ZUNIONSTORE', top, #KEYS - 1, unpack(KEYS, 1, #KEYS - 1))
  redis.call('PEXPIRE', top, tonumber(ARGV[2]))
end
return redis.call('ZREVRANGE', top, 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
"""


class Trending:
    """Writes and reads the trending scores."""

    def __init__(self, client: aioredis.Redis, window_s: float) -> None:
        self.r = client
        #: shards of ``all``: :data:`SHARDS` on a Redis Cluster; one Redis keeps one key per bucket
        self.shards = SHARDS if is_cluster(client) else 1
        self.window_ms = int(window_s * 1000)
        self.bucket_ms = max(1, self.window_ms // BUCKETS)
        self._top = client.register_script(TOP_LUA)
        self._add = client.register_script(ADD_LUA)
        self.latest: list[tuple[str, float]] = []  # the catalogue's top items at the last refresh
        self.now_ms = 0  # the stream's clock: the newest event time seen

    def tags(self, scope: str) -> list[str]:
        """The hash tags of a scope: ``all``'s shards (on a cluster), or the scope's one."""
        if scope == "all" and self.shards > 1:
            return [f"{{trend:all:{k}}}" for k in range(self.shards)]
        return ["{trend:" + scope + "}"]

    def key(self, scope: str, bucket: int, shard: int = 0) -> str:
        """A bucket's sorted set (``shard``: of ``all``)."""
        return self.tags(scope)[shard] + ":" + str(bucket)

    def counter(self) -> Counts:
        return Counts(self.bucket_ms)

    def calls(self, counts: Counts) -> list[tuple[list[str], list[Any]]]:
        """``counts``' increments as ADD_LUA calls: one per scope (per shard of ``all``) with the
        increments as flat arguments (a ZINCRBY command each took the event loop ~15 µs per item
        to pack: a 10-15 ms stall every second at 1,000 events/s)."""
        self.now_ms = max(self.now_ms, counts.newest_ts)
        expire_s = int((self.window_ms + 2 * self.bucket_ms) / 1000) + 1
        per_tag: dict[str, tuple[list[str], list[Any]]] = {}
        for (scope, b), items in counts.by_key.items():
            if scope == "all" and self.shards > 1:  # spread over the shards by item
                parts: dict[int, dict[str, float]] = defaultdict(dict)
                for item, w in items.items():
                    parts[shard_of(item)][item] = w
            else:
                parts = {0: items}
            for shard, part in parts.items():
                key = self.key(scope, b, shard)
                keys, args = per_tag.setdefault(key.rpartition(":")[0], ([], [expire_s]))
                keys.append(key)
                args.append(len(part))
                for item, w in part.items():
                    args += (item, w)
        return list(per_tag.values())

    async def write(self, counts: Counts) -> None:
        """Write ``counts`` (one pipeline: a round trip per Redis Cluster master)."""
        with redis_errors():
            for res in await eval_calls(self.r, self._add.sha, ADD_LUA, self.calls(counts)):
                if isinstance(res, BaseException):
                    raise res

    async def top(self, scope: str = "all", n: int = 100, *, now_ms: int | None = None) -> list[tuple[str, float]]:
        """The ``n`` top items of ``scope`` over the window ending at ``now_ms`` (default the
        stream's clock), best first (ties: by item id, descending). Redis sums the window's
        buckets and ranks them; only the ``n`` best come back."""
        now = now_ms if now_ms is not None else (self.now_ms or int(time.time() * 1000))
        last = now // self.bucket_ms
        calls = [([f"{tag}:{b}" for b in range(last - BUCKETS + 1, last + 1)] + [f"{tag}:top:{last}"], [n, TOP_CACHE_MS])
                 for tag in self.tags(scope)]  # fmt: skip
        with redis_errors():
            got = await eval_calls(self.r, self._top.sha, TOP_LUA, calls)
            for res in got:
                if isinstance(res, BaseException):
                    raise res
        pairs = [(res[i].decode(), float(res[i + 1])) for res in got for i in range(0, len(res), 2)]
        return heapq.nlargest(n, pairs, key=lambda p: (p[1], p[0]))

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
            await self.trending.write(counts)
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
