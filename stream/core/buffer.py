"""Per-user recent-behaviour buffers in Redis, updated idempotently in one Lua call per batch.

Keys (hash-tagged so each user's keys share one Redis Cluster slot):

- ``{u:<user_id>}:recent`` list of entries ``"<ts>|<event_type>|<item_id>"`` (the format is
  :mod:`attnrec.stream.core.inputs`'s: ``encode_entry`` / ``split_entry``), newest first,
  capped at ``max_len``, TTL refreshed on write.
- ``{u:<user_id>}:ev``     sorted set of the last ``dedupe_window`` applied event_ids
  (catches a producer's retry, which arrives at a new offset).
- ``{u:<user_id>}:wm``     hash ``<topic>:<partition>`` -> highest applied offset (catches a
  redelivery after a crash exactly: one user lives on one partition, so an event at or below
  the watermark was applied already, however many events the user sent since).
- ``{u:<user_id>}:recs``   the latest recommendation (JSON), for the lookup API.

An event is applied at most once: both checks and the append happen inside one script, which
Redis runs atomically; with AOF on, a Redis restart keeps the applied state and the
watermark together.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions as rexc

from attnrec.errors import StateLostError, TransientError
from attnrec.events import ClickEvent

from .entries import BufferEntry, decode_entry, encode_entry

__all__ = ["STATE_KEY", "STATE_LOST", "RedisBuffers", "Applied", "APPLIED", "REDELIVERED", "RETRY", "user_keys", "APPLY_LUA", "redis_errors"]

#: A key that exists while Redis holds attnrec's state; the worker creates it on a fresh start
#: and the apply script refuses to run without it. Losing it (a restart without persistence, a
#: failover to an empty replica) pauses every worker instead of rebuilding buffers from nothing.
STATE_KEY = "attnrec:state"
STATE_LOST = (f"Redis holds none of attnrec's state ({STATE_KEY} is missing: a restart without persistence or a "
              "failover to an empty replica?). Batches are paused: nothing is applied, recommended or committed. "
              "Restore Redis' data, or set ATTNREC_REDIS_EMPTY_OK=true to start over with empty buffers.")

#: What the apply script says of each event (``Applied.codes``).
REDELIVERED, APPLIED, RETRY = 0, 1, 2

log = logging.getLogger(__name__)


def user_keys(user_id: str) -> tuple[str, str, str, str]:
    tag = "{u:" + user_id + "}"
    return tag + ":recent", tag + ":ev", tag + ":wm", tag + ":recs"


# KEYS: per event i (1-based): recent, ev, wm at 3i-2, 3i-1, 3i; last, the state marker
#       (STATE_KEY): without it the script refuses (an empty Redis is not applied to).
# ARGV: max_len, ttl_s, dedupe_window, return_len, n_events, n_users,
#       then per event: event_id, wm_field, offset, entry (4 each),
#       then per distinct user: the 1-based index of one of its events (for its keys),
#       then per distinct user: how many entries to return (0 = return_len).
# Returns {per event: 1 applied, 0 already applied at or below this offset (a redelivery), 2 an
#          event_id already applied at another offset (a producer's retry)},
#         {buffer per distinct user (newest first)},
#          {events ever applied to each distinct user's buffer ('#seq', 0 when none)}}.
APPLY_LUA = """
if redis.call('EXISTS', KEYS[#KEYS]) == 0 then
  return redis.error_reply('NOSTATE attnrec state marker ' .. KEYS[#KEYS] .. ' is missing')
end
local max_len = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local ret_len = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local nu = tonumber(ARGV[6])
local applied = {}
for i = 1, n do
  local rk, ek, wk = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local b = 6 + 4*(i-1)
  local eid, field, off, entry = ARGV[b+1], ARGV[b+2], tonumber(ARGV[b+3]), ARGV[b+4]
  local dup = -1
  if off >= 0 then
    local wm = redis.call('HGET', wk, field)
    if wm and tonumber(wm) >= off then dup = 0 end
  end
  if dup < 0 and redis.call('ZSCORE', ek, eid) then dup = 2 end
  if dup >= 0 then
    applied[i] = dup
  else
    redis.call('LPUSH', rk, entry)
    redis.call('LTRIM', rk, 0, max_len - 1)
    redis.call('EXPIRE', rk, ttl)
    local seq = redis.call('HINCRBY', wk, '#seq', 1)
    redis.call('EXPIRE', wk, ttl)
    redis.call('ZADD', ek, seq, eid)
    redis.call('ZREMRANGEBYRANK', ek, 0, -(window + 1))
    redis.call('EXPIRE', ek, ttl)
    applied[i] = 1
  end
  if off >= 0 then
    local wm = redis.call('HGET', wk, field)
    if (not wm) or tonumber(wm) < off then redis.call('HSET', wk, field, off) end
    redis.call('EXPIRE', wk, ttl)
  end
end
local bufs = {}
local seqs = {}
local ub = 6 + 4*n
for j = 1, nu do
  local i = tonumber(ARGV[ub + j])
  local r = tonumber(ARGV[ub + nu + j])
  if r == nil or r <= 0 then r = ret_len end
  bufs[j] = redis.call('LRANGE', KEYS[3*i-2], 0, r - 1)
  seqs[j] = tonumber(redis.call('HGET', KEYS[3*i], '#seq') or '0')
end
return {applied, bufs, seqs}
"""


# KEYS: the recs key of each user; ARGV: ttl_s, then one payload per key.
STORE_RECS_LUA = """
local ttl = ARGV[1]
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], ARGV[i + 1], 'EX', ttl)
end
return #KEYS
"""


@dataclass(frozen=True, slots=True)
class Applied:
    """Outcome of one batch: which events were new, and each touched user's buffer.

    ``raw`` holds each distinct user's newest ``return_len`` entries as Redis returned them
    (bytes, newest first). The hot path parses them through a memo
    (:class:`attnrec.stream.core.inputs.EntryTable`), because splitting every entry of every window on every
    batch cost more than the model (docs/BENCHMARKS.md); :attr:`buffers` decodes them all, for
    tests and tools.
    """

    applied: list[bool]
    users: list[str]
    raw: dict[str, list[bytes]]
    #: per event: 1 applied now, 0 applied before at this offset (a redelivery: its output may have
    #: been lost or aborted, so it is a trigger again), 2 an event_id applied before at another
    #: offset (a producer's retry: its first copy was the trigger; this one never is)
    codes: list[int] = field(default_factory=list)
    #: per user: events ever applied to its buffer (the ``#seq`` counter), after this batch; the
    #: worker's key/value cache is in step with Redis when it has seen exactly those
    seq: dict[str, int] = field(default_factory=dict)

    @property
    def buffers(self) -> dict[str, list[BufferEntry]]:
        return {u: [decode_entry(e) for e in entries] for u, entries in self.raw.items()}


def map_redis_error(exc: BaseException) -> TransientError:
    return TransientError(f"redis: {type(exc).__name__}: {exc}")


_TRANSIENT = (rexc.ConnectionError, rexc.TimeoutError, rexc.BusyLoadingError, rexc.TryAgainError, OSError)

#: Error replies by which a healthy Redis refuses a command for a while: out of memory under
#: ``noeviction``, a replica during failover, a failed AOF/RDB write, a busy script, cluster
#: resharding. They say nothing about the event, so they must pause the worker (retry), never
#: count towards dead-lettering it as poison.
# Replies of a Redis that is up but will not take this write now. NOPERM/NOAUTH/WRONGPASS are
# misconfiguration rather than passing trouble, but pausing until an operator fixes the ACL
# is right: dead-lettering valid events as poison would lose them.
_TRANSIENT_REPLIES = ("OOM", "READONLY", "MISCONF", "MASTERDOWN", "NOREPLICAS", "CLUSTERDOWN", "TRYAGAIN", "LOADING", "BUSY",
                      "NOPERM", "NOAUTH", "WRONGPASS")  # fmt: skip


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The boundary where redis-py errors become ours: connection trouble and replies of a
    Redis that is up but refusing writes are :class:`TransientError` (retry, never
    dead-letter); a Redis without attnrec's state marker is :class:`StateLostError`; any other
    reply error propagates."""
    try:
        yield
    except _TRANSIENT as exc:
        raise map_redis_error(exc) from exc
    except rexc.ResponseError as exc:
        if "NOSTATE" in str(exc):
            raise StateLostError(STATE_LOST) from exc
        if _transient_reply(exc):
            raise map_redis_error(exc) from exc
        raise


def _transient_reply(exc: rexc.ResponseError) -> bool:
    msg = str(exc)
    # a script's error reply may carry the code after a prefix ("Error running script ...: OOM ...")
    return isinstance(exc, (rexc.OutOfMemoryError, rexc.ReadOnlyError)) or any(
        msg.startswith(code) or f": {code} " in msg or f" -{code} " in msg for code in _TRANSIENT_REPLIES
    )


class RedisBuffers:
    """The buffer store. Every Redis failure surfaces as :class:`TransientError`."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_len: int = 200,
        ttl_s: int = 30 * 86400,
        dedupe_window: int = 512,
        return_len: int | None = None,
    ) -> None:
        self.r = client
        self.max_len = max_len
        self.ttl_s = ttl_s
        self.dedupe_window = dedupe_window
        self.return_len = return_len or max_len
        self._script = client.register_script(APPLY_LUA)
        self._store_script = client.register_script(STORE_RECS_LUA)

    async def apply(
        self,
        events: Sequence[tuple[ClickEvent, str, int]],
        *,
        return_len: int | None = None,
        user_len: Mapping[str, int] | None = None,
    ) -> Applied:
        """Apply ``(event, watermark_field, offset)`` triples in order; offset -1 = none.

        ``watermark_field`` is ``"<topic>:<partition>"``. Returns which events were new, the
        newest ``return_len`` entries of each distinct user touched (newest first; ``user_len``
        overrides that per user), read after all were applied, and each user's ``#seq``.
        """
        keys: list[str] = []
        ret = self.return_len if return_len is None else max(1, return_len)
        args: list[str | int] = [self.max_len, self.ttl_s, self.dedupe_window, ret, len(events), 0]
        first_index: dict[str, int] = {}
        for i, (ev, wm_field, offset) in enumerate(events, start=1):
            rk, ek, wk, _ = user_keys(ev.user_id)
            keys += [rk, ek, wk]
            args += [ev.event_id, wm_field, offset, encode_entry(ev)]
            first_index.setdefault(ev.user_id, i)
        keys.append(STATE_KEY)
        users = list(first_index)
        args[5] = len(users)
        args += [first_index[u] for u in users]
        args += [(user_len or {}).get(u, 0) for u in users]
        with redis_errors():
            flags, bufs, seqs = await self._script(keys=keys, args=args)
        codes = [int(f) for f in flags]
        return Applied(applied=[c == 1 for c in codes], users=users, raw=dict(zip(users, bufs, strict=True)),
                       seq=dict(zip(users, (int(x) for x in seqs), strict=True)), codes=codes)

    async def has_state(self) -> bool:
        with redis_errors():
            return bool(await self.r.exists(STATE_KEY))

    async def has_buffers(self) -> bool:
        """Whether Redis holds any user's keys (a SCAN: cheap when it finds one early)."""
        with redis_errors():
            async for _ in self.r.scan_iter(match="{u:*", count=1000):
                return True
        return False

    async def mark_state(self, why: str) -> None:
        """Create the state marker (a fresh start, or an operator who accepts empty buffers)."""
        import json
        import time

        with redis_errors():
            await self.r.set(STATE_KEY, json.dumps({"created_ms": int(time.time() * 1000), "by": why}), nx=True)

    async def recent(self, users: Sequence[str], n: int) -> dict[str, list[bytes]]:
        """Each user's newest ``n`` entries (newest first), in one pipelined round trip."""
        if not users:
            return {}
        with redis_errors():
            async with self.r.pipeline(transaction=False) as p:
                for u in users:
                    p.lrange(user_keys(u)[0], 0, n - 1)
                got = await p.execute()
        return dict(zip(users, got, strict=True))

    async def store_recs(self, recs: dict[str, bytes]) -> None:
        """Write each user's latest recommendation, with the buffer TTL, in one script call
        (a pipeline of one SET per user cost ~5x more client CPU)."""
        if not recs:
            return
        keys = [user_keys(u)[3] for u in recs]
        with redis_errors():
            await self._store_script(keys=keys, args=[self.ttl_s, *recs.values()])

    async def get_recs(self, user_id: str) -> bytes | None:
        with redis_errors():
            v = await self.r.get(user_keys(user_id)[3])
        return v  # type: ignore[no-any-return]

    async def get_buffer(self, user_id: str, n: int | None = None) -> list[BufferEntry]:
        with redis_errors():
            raw = await self.r.lrange(user_keys(user_id)[0], 0, (n or self.max_len) - 1)
        return [decode_entry(e) for e in raw]
