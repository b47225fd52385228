"""The availability state: what may be recommended now, shared by every worker through Redis.

Catalog events (:class:`attnrec.events.CatalogEvent`, the ``catalog`` topic) are applied by
one Lua call per batch; each item's last status wins by event time (an older event arriving
late changes nothing, and a redelivered one applies the same status again: idempotent). Keys:

- ``{catalog}:status``  hash item -> ``"<ts>|<status>|<count>"`` (the last status applied)
- ``{catalog}:unavail`` set of the items that may not be recommended now
- ``{catalog}:cat``     hash item -> category (from any catalog event that names one)
- ``{catalog}:room``    hash item -> room (a product's live room)
- ``{catalog}:ver``     counter, bumped whenever the unavailable set or a category changes

(one hash tag: one Redis Cluster slot, so the script may touch them all)

Each worker keeps a copy (:class:`Availability`) and compares the counter once per batch (one
GET): a change applied by any worker is in the next batch of every worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis

from attnrec.errors import InvalidEventError, TransientError
from attnrec.events import CatalogEvent, parse_catalog_event
from attnrec.redis_util import is_cluster
from attnrec.settings import Settings

from ..core.buffer import redis_errors
from ..core.metrics import WorkerMetrics
from ..core.stage import Batch, Stage

__all__ = ["CATALOG_KEYS", "APPLY_CATALOG_LUA", "Availability", "CatalogStore", "CatalogStage"]

log = logging.getLogger(__name__)

#: status hash, unavailable set, category hash, room hash, version counter
CATALOG_KEYS = ("{catalog}:status", "{catalog}:unavail", "{catalog}:cat", "{catalog}:room", "{catalog}:ver")

# KEYS: CATALOG_KEYS. ARGV: per event, 7 each: item, ts, status, count ('' = none), available
# (1/0), category ('' = none), room ('' = none). Returns {applied flag per event}, version.
APPLY_CATALOG_LUA = """
local changed = 0
local flags = {}
local n = #ARGV / 7
for i = 1, n do
  local b = 7 * (i - 1)
  local item, ts, status, count, avail, cat, room = ARGV[b+1], tonumber(ARGV[b+2]), ARGV[b+3], ARGV[b+4], ARGV[b+5], ARGV[b+6], ARGV[b+7]
  local old = redis.call('HGET', KEYS[1], item)
  local old_ts = -1
  if old then old_ts = tonumber(string.match(old, '^(%-?%d+)|')) end
  if ts >= old_ts then
    redis.call('HSET', KEYS[1], item, ts .. '|' .. status .. '|' .. count)
    if avail == '1' then
      changed = changed + redis.call('SREM', KEYS[2], item)
    else
      changed = changed + redis.call('SADD', KEYS[2], item)
    end
    if cat ~= '' and redis.call('HGET', KEYS[3], item) ~= cat then
      redis.call('HSET', KEYS[3], item, cat)
      changed = changed + 1
    end
    if room ~= '' then redis.call('HSET', KEYS[4], item, room) end
    flags[i] = 1
  else
    flags[i] = 0
  end
end
local ver
if changed > 0 then ver = redis.call('INCR', KEYS[5]) else ver = tonumber(redis.call('GET', KEYS[5]) or '0') end
return {flags, ver}
"""


@dataclass
class Availability:
    """A worker's copy of the shared state: the unavailable items and the known categories,
    as of ``version`` (-1: never read)."""

    version: int = -1
    unavailable: frozenset[str] = frozenset()
    category: dict[str, str] = field(default_factory=dict)
    room: dict[str, str] = field(default_factory=dict)

    def available(self, item_id: str) -> bool:
        return item_id not in self.unavailable


class CatalogStore:
    """Applies catalog events to Redis and keeps :attr:`view` current. Every Redis failure
    surfaces as :class:`attnrec.errors.TransientError`."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.r = client
        self.cluster = is_cluster(client)
        self._script = client.register_script(APPLY_CATALOG_LUA)
        self.view = Availability()

    async def apply(self, events: Sequence[CatalogEvent]) -> list[bool]:
        """Apply ``events`` in order; returns which changed an item's status (False: older than
        the status already applied). The local view is refreshed afterwards."""
        if not events:
            return []
        args: list[str | int] = []
        for ev in events:
            args += [ev.item_id, ev.ts, ev.status, ev.count if ev.count is not None else "",
                     1 if ev.available else 0, ev.category or "", ev.room_id or ""]  # fmt: skip
        with redis_errors():
            flags, _ = await self._script(keys=list(CATALOG_KEYS), args=args)
        await self.refresh()
        return [bool(int(f)) for f in flags]

    async def refresh(self) -> bool:
        """Re-read the state if another worker changed it (one GET when nothing changed).
        Returns True when the view changed."""
        with redis_errors():
            ver = int(await self.r.get(CATALOG_KEYS[4]) or 0)
            if ver == self.view.version:
                return False
            # one Redis: MULTI. A Redis Cluster (one slot: {catalog}): a plain pipeline, since
            # redis-py's cluster transactions fail on these replies; the version is read first, so
            # a write landing in between shows as a newer version at the next refresh, re-read then
            async with self.r.pipeline(transaction=not self.cluster) as p:
                p.get(CATALOG_KEYS[4]).smembers(CATALOG_KEYS[1]).hgetall(CATALOG_KEYS[2]).hgetall(CATALOG_KEYS[3])
                ver_b, unavail, cats, rooms = await p.execute()
        self.view = Availability(int(ver_b or 0), frozenset(x.decode() for x in unavail),
                                 {k.decode(): v.decode() for k, v in cats.items()},
                                 {k.decode(): v.decode() for k, v in rooms.items()})
        log.debug("availability v%d: %d unavailable items", self.view.version, len(self.view.unavailable))
        return True


class CatalogStage(Stage):
    """``CATALOG``: the availability state on the batch path. Each batch starts from the state
    as of now (one GET when nothing changed), so a change applied by any worker is in the next
    batch of every worker; the catalog agent applies the topic (:meth:`apply`). What is
    unavailable is kept out by the policy stage, which reads :attr:`view`."""

    name = "catalog"

    def __init__(self, s: Settings, client: aioredis.Redis, metrics: WorkerMetrics) -> None:
        self.s = s
        self.store = CatalogStore(client)
        self.metrics = metrics

    @property
    def view(self) -> Availability:
        return self.store.view

    async def begin(self, batch: Batch) -> None:
        if await self.store.refresh():
            self.metrics.catalog_unavailable.set(len(self.store.view.unavailable))

    async def apply(self, values: Sequence[bytes | None]) -> None:
        """Apply a batch of catalog records to the shared state, retrying Redis trouble until
        it succeeds; an invalid record is logged, counted and skipped (it cannot change what
        is available)."""
        events = []
        for v in values:
            try:
                events.append(parse_catalog_event(v))
            except InvalidEventError as exc:
                self.metrics.catalog_events.labels("invalid").inc()
                log.warning("catalog record skipped: %s", exc)
        attempt = 0
        while events:
            try:
                flags = await self.store.apply(events)
                break
            except TransientError as exc:
                attempt += 1
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("catalog batch of %d failed (attempt %d): %s; retrying in %.2fs", len(events), attempt, exc, delay)
                await asyncio.sleep(delay)
        else:
            return
        now = time.time() * 1000
        for ev, applied in zip(events, flags, strict=True):
            self.metrics.catalog_events.labels("applied" if applied else "stale").inc()
            self.metrics.catalog_delay_ms.observe(max(0.0, now - ev.ts))
        self.metrics.catalog_unavailable.set(len(self.store.view.unavailable))
