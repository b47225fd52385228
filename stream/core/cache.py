"""Per-user key/value caches of an incremental model: the worker's accelerator, never the truth.

With relative positions and a band of L events (:mod:`attnrec.training.model`), an event's keys and
values in every block are fixed once it has arrived. The worker keeps, per user, every block's
keys and values of the user's last L-1 events; scoring a new event is then one query per block
over them (the model's step graph) instead of the whole history through the full graph.

What a cache holds for a user (:class:`UserCache`): the keys/values (blocks, 2, L-1, d), oldest
first and left-padded (``n`` of the slots are events), the user's ``seq`` (how many events
Redis had applied to the buffer when the cache was last brought up to date: the ``#seq``
counter of the Lua script) and the user's newest raw buffer entries (the exclusion list and
the window the explanation names) with, once a step has parsed them, their item indices.

Semantics. A batch in which a user has exactly one new event, and whose Redis ``#seq`` is the
cache's ``seq`` + 1, is a hit: the step graph scores it from the cache. Anything else is a
miss and goes through the full graph over the Redis buffer, which also refills the cache: a
user never seen (cold start), several new events in one batch, a cache evicted (LRU by bytes),
a cache behind Redis (another worker served the user after a rebalance, or a batch in flight
overlapped), Redis restarted empty (the counter starts over), or a new model (a swap empties
the cache, the keys belong to a version). The state that must survive a restart stays in Redis
(the buffer); losing a cache costs one full-graph row.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["UserCache", "KVCache"]

#: Per-entry bookkeeping besides the arrays (dict slot, object headers, the key string).
_OVERHEAD_BYTES = 400
#: Per raw entry besides its bytes (the bytes object's header).
_ENTRY_BYTES = 33


@dataclass(slots=True)
class UserCache:
    kv: np.ndarray  # (blocks, 2, L-1, d), oldest first, left-padded; float32 or float16
    n: int  # slots that hold events (the newest n)
    seq: int  # the user's Redis #seq this cache is in step with
    recent: list[bytes]  # the user's newest raw buffer entries, newest first
    seen: np.ndarray | None = None  # their item indices (int64), once a step has parsed them
    nbytes: int = 0  # what the cache counts for it (kept up to date by KVCache: summing ``recent``
    # at every event cost ~15 µs per row, a quarter of the step graph's own time)

    def __post_init__(self) -> None:
        self.nbytes = self.kv.nbytes + sum(len(e) + _ENTRY_BYTES for e in self.recent) + _OVERHEAD_BYTES


class KVCache:
    """User -> :class:`UserCache`, least recently used first out, bounded by ``max_bytes``."""

    def __init__(self, max_bytes: int, dtype: str = "float32") -> None:
        self.max_bytes = max_bytes
        self.dtype = np.dtype(dtype)
        self._users: OrderedDict[str, UserCache] = OrderedDict()
        self.bytes = 0
        self.evictions = 0
        self.version: str | None = None  # the model version the keys/values belong to

    def __len__(self) -> int:
        return len(self._users)

    def reset(self, version: str | None) -> None:
        """Forget everything (a new model: keys/values belong to a version)."""
        self._users.clear()
        self.bytes = 0
        self.version = version

    def peek(self, user: str) -> UserCache | None:
        """The user's cache, if any, without touching the LRU order."""
        return self._users.get(user)

    def get(self, user: str) -> UserCache | None:
        c = self._users.get(user)
        if c is not None:
            self._users.move_to_end(user)
        return c

    def hit(self, user: str, seq: int, new_events: int) -> UserCache | None:
        """The user's cache when this batch can be scored from it: exactly one new event, and the
        cache in step with Redis just before it."""
        c = self._users.get(user)
        if c is None or new_events != 1 or c.seq != seq - 1:
            return None
        self._users.move_to_end(user)
        return c

    def put(self, user: str, kv: np.ndarray, n: int, seq: int, recent: Sequence[bytes],
            seen: np.ndarray | None = None) -> None:
        """Store (or replace) a user's cache, then evict the least recently used beyond the bound."""
        old = self._users.pop(user, None)
        if old is not None:
            self.bytes -= old.nbytes
        c = UserCache(np.ascontiguousarray(kv, dtype=self.dtype), int(n), int(seq), list(recent), seen)
        if c.nbytes > self.max_bytes:
            return
        self._users[user] = c
        self.bytes += c.nbytes
        while self.bytes > self.max_bytes and self._users:
            _, gone = self._users.popitem(last=False)
            self.bytes -= gone.nbytes
            self.evictions += 1

    def advance(self, user: str, c: UserCache, new_kv: np.ndarray, new_entry: bytes, keep: int,
                seen: np.ndarray | None = None) -> None:
        """A hit's bookkeeping: roll the new event's keys/values into the cache (the oldest slot
        leaves the window), one more event in step with Redis, the entry at the head of
        ``recent`` (at most ``keep`` kept) and ``seen`` their item indices (the step row's, from
        :func:`attnrec.stream.core.inputs.build_step_inputs`). A cache evicted since it was looked up is
        stored again."""
        if seen is not None:
            seen = seen[:keep]
        if self._users.get(user) is not c:
            kv = np.concatenate([c.kv[:, :, 1:], new_kv[:, :, None].astype(c.kv.dtype)], axis=2)
            self.put(user, kv, min(c.n + 1, c.kv.shape[2]), c.seq + 1, [new_entry, *c.recent][:keep], seen)
            return
        c.seen = seen
        c.kv[:, :, :-1] = c.kv[:, :, 1:]
        c.kv[:, :, -1] = new_kv
        c.n = min(c.n + 1, c.kv.shape[2])
        c.seq += 1
        c.recent.insert(0, new_entry)
        grown = len(new_entry) + _ENTRY_BYTES
        for e in c.recent[keep:]:
            grown -= len(e) + _ENTRY_BYTES
        del c.recent[keep:]
        c.nbytes += grown
        self.bytes += grown
