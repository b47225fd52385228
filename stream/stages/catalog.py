"""The availability state: what may be recommended now, shared by every worker through Redis.

Catalog events (:class:`attnrec.events.CatalogEvent`, the ``catalog`` topic) are applied by
:class:`CatalogFeed`, a thread of each worker, one Lua call per poll; each item's last status
wins by event time (an older event arriving late changes nothing, and a redelivered one applies
the same status again: idempotent). Keys:

- ``{catalog}:status``  hash item -> ``"<ts>|<status>|<count>"`` (the last status applied)
- ``{catalog}:unavail`` set of the items that may not be recommended now
- ``{catalog}:cat``     hash item -> category (from any catalog event that names one)
- ``{catalog}:room``    hash item -> room (a product's live room)
- ``{catalog}:ver``     counter, bumped whenever the unavailable set or a category changes

(one hash tag: one Redis Cluster slot, so the script may touch them all)

Each worker keeps a copy (:class:`Availability`) and compares the counter twice per batch (one
GET each: before scoring and just before the send): a change applied by any worker reaches
every list sent after it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from kafka.errors import KafkaError

from attnrec.errors import InvalidEventError, TransientError
from attnrec.events import CatalogEvent, parse_catalog_event
from attnrec.kafka_util import make_consumer
from attnrec.redis_util import is_cluster, redis_sync
from attnrec.settings import Settings

from ..core.buffer import redis_errors
from ..core.metrics import WorkerMetrics
from ..core.stage import Batch, Stage

__all__ = ["CATALOG_KEYS", "APPLY_CATALOG_LUA", "Availability", "CatalogStore", "CatalogStage", "CatalogFeed", "catalog_args"]

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


def catalog_args(events: Sequence[CatalogEvent]) -> list[str | int]:
    """``APPLY_CATALOG_LUA``'s ARGV for ``events``."""
    args: list[str | int] = []
    for ev in events:
        args += [ev.item_id, ev.ts, ev.status, ev.count if ev.count is not None else "",
                 1 if ev.available else 0, ev.category or "", ev.room_id or ""]  # fmt: skip
    return args


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
        with redis_errors():
            flags, _ = await self._script(keys=list(CATALOG_KEYS), args=catalog_args(events))
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
    as of now (one GET when nothing changed) and looks again after scoring, so a change applied
    by any worker reaches the lists every worker sends from then on; :class:`CatalogFeed` applies
    the topic. What is unavailable is kept out by the policy stage, which reads
    :attr:`view`."""

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

    async def rewrite(self, batch: Batch) -> None:
        """Once more just before the lists leave (one GET when nothing changed): a batch takes
        from tens of milliseconds to seconds under a burst between ``begin`` and its send, and a
        status change applied meanwhile must not wait for the next batch; the policy stage
        drops what it made unavailable."""
        await self.begin(batch)


def _joined(consumer: Any) -> bool:
    """The kafka-python consumer (pinned: pyproject) has a stable group generation; a member with
    no partition, as when workers outnumber the catalog topic's partitions, has one too."""
    return consumer._coordinator.generation_if_stable() is not None


class CatalogFeed:
    """The catalog topic, read and applied in a thread of its own (a kafka-python consumer in
    the group ``<GROUP_ID>-catalog`` and a blocking Redis client), so a status change never
    queues behind the click path: under a burst the worker's event loop runs seconds behind,
    and a sold-out item must not wait for it. At least once: offsets are committed after the
    events are applied, and applying again is harmless (the last status by event time wins);
    a new group reads the topic from its start. Redis trouble is retried until it passes;
    an invalid record is logged, counted and skipped (it cannot change what is available)."""

    def __init__(self, s: Settings, metrics: WorkerMetrics) -> None:
        self.s = s
        self.metrics = metrics
        #: set once the consumer has joined its group (its partitions, if any, are being read):
        #: until then a status change reaches nobody, so the worker is not ready (``/readyz``)
        self.joined = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> CatalogFeed:
        self._thread = threading.Thread(target=self._run, name="catalog-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _run(self) -> None:
        s = self.s
        client = redis_sync(s)
        script = client.register_script(APPLY_CATALOG_LUA)
        consumer = None
        try:
            while consumer is None and not self._stop.is_set():
                try:
                    consumer = make_consumer(s, s.catalog_topic, group_id=f"{s.group_id}-catalog",
                                             enable_auto_commit=False, max_poll_records=512)
                except KafkaError as exc:  # the brokers not reachable yet
                    log.warning("catalog feed: cannot reach Kafka (%s); trying again", exc)
                    self._stop.wait(1.0)
            if consumer is None:
                return
            log.info("catalog feed: reading %s in group %s-catalog", s.catalog_topic, s.group_id)
            while not self._stop.is_set():
                got = consumer.poll(timeout_ms=200)
                if not self.joined.is_set() and _joined(consumer):
                    self.joined.set()
                    log.info("catalog feed: joined group %s-catalog, reading %d partition(s)", s.group_id,
                             len(consumer.assignment()))  # fmt: skip
                values = [r.value for recs in got.values() for r in recs]
                if values and self.apply(script, values):
                    try:
                        consumer.commit()
                    except KafkaError as exc:  # a rebalance: the next owner applies them again
                        log.warning("catalog feed: offsets not committed (%s)", exc)
        except Exception:  # logged once here; re-raised, the thread would print it again
            log.exception("catalog feed stopped")
        finally:
            if consumer is not None:
                consumer.close()
            client.close()

    def apply(self, script: Any, values: Sequence[bytes | None]) -> bool:
        """Apply a poll's records (one script call), retrying Redis trouble until it passes;
        False when the feed was stopped first."""
        events = []
        for v in values:
            try:
                events.append(parse_catalog_event(v))
            except InvalidEventError as exc:
                self.metrics.catalog_events.labels("invalid").inc()
                log.warning("catalog record skipped: %s", exc)
        if not events:
            return True
        attempt = 0
        while True:
            try:
                with redis_errors():
                    flags, _ = script(keys=list(CATALOG_KEYS), args=catalog_args(events))
                break
            except TransientError as exc:
                attempt += 1
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("catalog batch of %d failed (attempt %d): %s; retrying in %.2fs", len(events), attempt, exc, delay)
                if self._stop.wait(delay):
                    return False
        now = time.time() * 1000
        for ev, applied in zip(events, flags, strict=True):
            self.metrics.catalog_events.labels("applied" if int(applied) else "stale").inc()
            self.metrics.catalog_delay_ms.observe(max(0.0, now - ev.ts))
        return True
