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
Redis runs atomically; with AOF on, a Redis restart keeps the applied state and the watermark
together. A script may touch one Redis Cluster slot only: a batch is one call per *state group*
(:mod:`attnrec.stream.core.groups`: the batch on one Redis, each slot's events on a cluster, all
in one pipeline), each group with its state marker (no marker: refused, an empty Redis is never
applied to) and progress hash (below what this worker applied: refused, :class:`LostWritesError`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import redis.exceptions as rexc

from attnrec.errors import LostWritesError, StateLostError
from attnrec.events import ClickEvent
from attnrec.redis_util import eval_calls, is_cluster
from attnrec.redis_util import redis_errors as _base_redis_errors

from . import groups as gr
from .entries import BufferEntry, decode_entry, encode_entry
from .groups import PROGRESS_KEY, STATE_KEY, STATE_LOST, progress_key, state_key

__all__ = ["STATE_KEY", "PROGRESS_KEY", "STATE_LOST", "RedisBuffers", "Applied", "APPLIED", "REDELIVERED", "RETRY",
           "user_keys", "state_key", "progress_key", "APPLY_LUA", "STORE_RECS_LUA", "redis_errors"]

#: What the apply script says of each event (``Applied.codes``).
REDELIVERED, APPLIED, RETRY = 0, 1, 2

log = logging.getLogger(__name__)


def user_keys(user_id: str) -> tuple[str, str, str, str]:
    tag = "{u:" + user_id + "}"
    return tag + ":recent", tag + ":ev", tag + ":wm", tag + ":recs"


# KEYS: per event i (1-based): recent, ev, wm at 3i-2, 3i-1, 3i; then the group's state marker
#       (state_key: without it the script refuses: an empty Redis is not applied to) and its
#       progress hash (progress_key).
# ARGV: max_len, ttl_s, dedupe_window, return_len, n_events, n_users, n_fields,
#       then per event: event_id, wm_field, offset, entry (4 each),
#       then per distinct user: the 1-based index of one of its events (for its keys),
#       then per distinct user: how many entries to return (0 = return_len),
#       then per watermark field the worker applied to this group before: the field, the highest
#       offset it applied (the group's progress must be at least that, or Redis lost writes).
# Returns {per event: 1 applied, 0 already applied at or below this offset (a redelivery), 2 an
#          event_id already applied at another offset (a producer's retry)},
#         {buffer per distinct user (newest first)},
#          {events ever applied to each distinct user's buffer ('#seq', 0 when none)}}.
APPLY_LUA = """
local mk, pk = KEYS[#KEYS - 1], KEYS[#KEYS]
if redis.call('EXISTS', mk) == 0 then
  return redis.error_reply('NOSTATE attnrec state marker ' .. mk .. ' is missing')
end
local max_len = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local window = tonumber(ARGV[3])
local ret_len = tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local nu = tonumber(ARGV[6])
local nf = tonumber(ARGV[7])
local fb = 7 + 4*n + 2*nu
for j = 1, nf do
  local f, want = ARGV[fb + 2*j - 1], tonumber(ARGV[fb + 2*j])
  local have = tonumber(redis.call('HGET', pk, f) or '-1')
  if have < want then
    return redis.error_reply('LOSTWRITES ' .. pk .. ' ' .. f .. ' ' .. have .. ' ' .. want)
  end
end
local top = {}
local applied = {}
for i = 1, n do
  local rk, ek, wk = KEYS[3*i-2], KEYS[3*i-1], KEYS[3*i]
  local b = 7 + 4*(i-1)
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
    if (top[field] or -1) < off then top[field] = off end
  end
end
for f, off in pairs(top) do
  if tonumber(redis.call('HGET', pk, f) or '-1') < off then redis.call('HSET', pk, f, off) end
end
local bufs = {}
local seqs = {}
local ub = 7 + 4*n
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


@contextlib.contextmanager
def redis_errors() -> Iterator[None]:
    """The boundary where redis-py errors become ours (:func:`attnrec.redis_util.redis_errors`:
    connection trouble, a cluster's moving slots and replies of a Redis refusing writes are
    :class:`TransientError`), plus the apply script's refusals: a group without attnrec's state
    marker is :class:`StateLostError`, one that lost writes :class:`LostWritesError`; any other
    reply error propagates."""
    try:
        with _base_redis_errors():
            yield
    except rexc.ResponseError as exc:
        ours = gr.refusal(exc)
        if ours is None:
            raise
        raise ours from exc


class RedisBuffers:
    """The buffer store. Every Redis failure surfaces as :class:`TransientError`. ``wait_replicas``
    > 0: a batch's writes count as done once that many replicas of each master written have them
    (``WAIT``), so a failover loses nothing committed; else a failover that lost writes is
    refused (:class:`LostWritesError`) and reported (:attr:`lost`, :meth:`audit`)."""

    def __init__(
        self,
        client: aioredis.Redis,
        *,
        max_len: int = 200,
        ttl_s: int = 30 * 86400,
        dedupe_window: int = 512,
        return_len: int | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.r = client
        self.cluster = is_cluster(client)
        self.max_len = max_len
        self.ttl_s = ttl_s
        self.dedupe_window = dedupe_window
        self.return_len = return_len or max_len
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._script = client.register_script(APPLY_LUA)
        self._store_script = client.register_script(STORE_RECS_LUA)
        self._apply_sha = hashlib.sha1(APPLY_LUA.encode()).hexdigest()
        self._store_sha = hashlib.sha1(STORE_RECS_LUA.encode()).hexdigest()
        self.progress = gr.Progress(self.cluster)
        self.markers = gr.Markers(client, self.cluster)
        #: groups found to have lost writes (:meth:`audit` makes it the complete list)
        self.lost: list[gr.LostWrite] = []
        self.trouble = asyncio.Event()  # set when a call was refused: the state guard looks at once

    # ------------------------------------------------------------------ apply
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
        ret = self.return_len if return_len is None else max(1, return_len)
        groups = gr.group_events(events, self.cluster, lambda u: user_keys(u)[0])
        calls = [self._call([events[i] for i in idx], g, ret, user_len) for g, idx in groups.items()]
        results: list[object]
        with redis_errors():
            if not self.cluster and not self.wait_replicas:
                try:
                    results = [await self._script(keys=calls[0][0], args=calls[0][1])]
                except rexc.ResponseError as exc:
                    results = [exc]  # a refusal: noted below, like a cluster group's
            else:
                waits = gr.wait_commands(self.r, self.cluster, groups, self.wait_replicas, self.wait_timeout_ms)
                results = await eval_calls(self.r, self._apply_sha, APPLY_LUA, calls, waits)
        codes: list[int] = [0] * len(events)
        raw: dict[str, list[bytes]] = {}
        seq: dict[str, int] = {}
        failure: BaseException | None = None
        done: list[tuple[int | None, list[int]]] = []
        for (g, idx), res in zip(groups.items(), results, strict=False):
            if isinstance(res, BaseException):
                failure = failure or self._failed(g, res)
                continue
            flags, bufs, seqs = res  # type: ignore[misc]
            for i, f in zip(idx, flags, strict=True):
                codes[i] = int(f)
            users = list(dict.fromkeys(events[i][0].user_id for i in idx))
            raw.update(zip(users, bufs, strict=True))
            seq.update(zip(users, (int(x) for x in seqs), strict=True))
            done.append((g, idx))
        if not self.wait_replicas:
            self.progress.remember_groups(events, done)
        if failure is not None:
            raise failure
        with redis_errors():
            gr.check_waits(results[len(calls):], self.wait_replicas, self.wait_timeout_ms)
        if self.wait_replicas:  # only what a replica has: a failover before its WAIT loses nothing it knew
            self.progress.remember_groups(events, done)
        users = list(dict.fromkeys(ev.user_id for ev, _, _ in events))
        return Applied(applied=[c == 1 for c in codes], users=users, raw={u: raw[u] for u in users},
                       seq={u: seq[u] for u in users}, codes=codes)  # fmt: skip

    def _call(self, events: Sequence[tuple[ClickEvent, str, int]], slot: int | None, ret: int,
              user_len: Mapping[str, int] | None) -> tuple[list[str], list[str | int]]:  # fmt: skip
        """One group's keys and arguments (APPLY_LUA's layout)."""
        keys: list[str] = []
        args: list[str | int] = [self.max_len, self.ttl_s, self.dedupe_window, ret, len(events), 0, 0]
        first_index: dict[str, int] = {}
        fields: dict[str, None] = {}
        for i, (ev, wm_field, offset) in enumerate(events, start=1):
            rk, ek, wk, _ = user_keys(ev.user_id)
            keys += [rk, ek, wk]
            args += [ev.event_id, wm_field, offset, encode_entry(ev)]
            first_index.setdefault(ev.user_id, i)
            if offset >= 0:
                fields[wm_field] = None
        keys += [state_key(slot), progress_key(slot)]
        users = list(first_index)
        args[5] = len(users)
        args += [first_index[u] for u in users]
        args += [(user_len or {}).get(u, 0) for u in users]
        checks = self.progress.checks(slot, list(fields))
        args[6] = len(checks)
        for f, off in checks:
            args += [f, off]
        return keys, args

    def _failed(self, slot: int | None, exc: BaseException) -> BaseException:
        """A group's failed call as the error to raise (a refusal is noted for the state guard)."""
        ours = gr.refusal(exc)
        if ours is not None:
            self.trouble.set()
        if isinstance(ours, StateLostError):
            self.markers.missing.add(slot)
            self.progress.forget(slot)  # whatever it held is gone: the operator decides what state it has now
            return ours
        if isinstance(ours, LostWritesError):
            self.lost.append(gr.LostWrite.parse(slot, str(exc)))
            return ours
        try:
            with redis_errors():
                raise exc
        except BaseException as mapped:
            return mapped

    async def audit(self) -> list[gr.LostWrite]:
        """Every group this worker applied to whose progress is now below what it applied: the
        complete list after a failover that lost writes (also kept as :attr:`lost`)."""
        with redis_errors():
            self.lost = await self.progress.audit(self.r)
        return self.lost

    # ------------------------------------------------------------------ the state marker
    async def has_state(self) -> bool:
        """Whether every group checked holds its state marker (:meth:`Markers.count`)."""
        present, checked = await self.state_markers()
        return present == checked

    async def state_markers(self) -> tuple[int, int]:
        """``(present, checked)`` state markers (one Redis: its one; a cluster: a spread of slots
        and any a call found without one)."""
        with redis_errors():
            return await self.markers.count()

    async def has_buffers(self) -> bool:
        """Whether Redis holds any user's keys (a SCAN of each master: cheap when it finds one
        early)."""
        with redis_errors():
            async for _ in self.r.scan_iter(match="{u:*", count=1000):
                return True
        return False

    async def mark_state(self, why: str) -> None:
        """Create the state marker (a fresh start, or an operator who accepts the state: what
        was applied before is no longer checked); on a cluster every slot's."""
        with redis_errors():
            await self.markers.mark(why)
        self.progress.forget(everything=True)
        self.lost = []

    # ------------------------------------------------------------------ reads and recommendations
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
        (a pipeline of one SET per user cost ~5x more client CPU); on a cluster one call per
        slot, pipelined."""
        if not recs:
            return
        if not self.cluster:
            keys = [user_keys(u)[3] for u in recs]
            with redis_errors():
                await self._store_script(keys=keys, args=[self.ttl_s, *recs.values()])
            return
        calls = gr.per_slot(recs, lambda u: user_keys(u)[3], [self.ttl_s])
        with redis_errors():
            for res in await eval_calls(self.r, self._store_sha, STORE_RECS_LUA, calls):
                if isinstance(res, BaseException):
                    raise res

    async def get_recs(self, user_id: str) -> bytes | None:
        with redis_errors():
            v = await self.r.get(user_keys(user_id)[3])
        return v  # type: ignore[no-any-return]

    async def get_buffer(self, user_id: str, n: int | None = None) -> list[BufferEntry]:
        with redis_errors():
            raw = await self.r.lrange(user_keys(user_id)[0], 0, (n or self.max_len) - 1)
        return [decode_entry(e) for e in raw]
