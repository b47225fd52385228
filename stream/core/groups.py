"""State groups: how the buffer store splits a batch for Redis, and what each part must still hold.

A Lua script may touch the keys of one Redis Cluster slot only. So the buffer store
(:mod:`attnrec.stream.core.buffer`) applies a batch as one script call per *state group*: the
whole batch on one Redis; each slot's events on a Redis Cluster (a user's keys share the slot of
their hash tag ``{u:<id>}``). Each group carries, in its own slot:

- a state marker, ``attnrec:state`` (one Redis) or ``attnrec:state:{<slot tag>}`` (a cluster slot):
  created on a fresh start; the script refuses a group without it, so an empty Redis, or the
  empty master of a slot after a failover to a replica without the data, is never applied to;
- a progress hash, ``attnrec:progress`` / ``attnrec:progress:{<slot tag>}``: ``<topic>:<partition>``
  -> the highest offset applied to the group.

``<slot tag>`` is :func:`attnrec.redis_util.slot_tags`' tag of the slot. :class:`Progress` is
the worker's memory of what it applied to each group: a group whose progress is below it lost
writes Redis had acknowledged (a failover to a replica that had not received them, a restart
that lost the AOF's tail), whose offsets may already be committed: the script refuses it
(``LOSTWRITES``) and :func:`lost_writes_message` tells the operator what to replay.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from attnrec.errors import LostWritesError, StateLostError, TransientError
from attnrec.events import ClickEvent
from attnrec.redis_util import HASH_SLOTS, key_slot, slot_tags

__all__ = ["STATE_KEY", "PROGRESS_KEY", "STATE_LOST", "state_key", "progress_key", "group_events", "per_slot", "refusal", "LostWrite",
           "lost_writes_message", "Progress", "Markers", "wait_commands", "check_waits"]

#: A key that exists while Redis holds attnrec's state; the worker creates it on a fresh start
#: and the apply script refuses to run without it. Losing it (a restart without persistence, a
#: failover to an empty replica) pauses every worker instead of rebuilding buffers from nothing.
STATE_KEY = "attnrec:state"
#: Hash ``<topic>:<partition>`` -> highest offset applied (one Redis; per slot on a cluster).
PROGRESS_KEY = "attnrec:progress"
STATE_LOST = (f"Redis holds none of attnrec's state ({STATE_KEY} is missing: a restart without persistence or a "
              "failover to an empty replica?). Batches are paused: nothing is applied, recommended or committed. "
              "Restore Redis' data, or set ATTNREC_REDIS_EMPTY_OK=true to start over with empty buffers.")


def state_key(slot: int | None = None) -> str:
    """The state marker of one Redis (``slot`` None), or of a cluster slot."""
    return STATE_KEY if slot is None else f"{STATE_KEY}:{{{slot_tags()[slot]}}}"


def progress_key(slot: int | None = None) -> str:
    """The progress hash of one Redis (``slot`` None), or of a cluster slot."""
    return PROGRESS_KEY if slot is None else f"{PROGRESS_KEY}:{{{slot_tags()[slot]}}}"


def group_events(events: Sequence[tuple[ClickEvent, str, int]], cluster: bool,
                 key: Any) -> dict[int | None, list[int]]:  # fmt: skip
    """Indexes of the batch's events by state group, in batch order: one group (None) on one
    Redis; per slot of ``key(user_id)`` (a user's first key) on a cluster."""
    if not cluster:
        return {None: list(range(len(events)))}
    groups: dict[int | None, list[int]] = {}
    slots: dict[str, int] = {}
    for i, (ev, _, _) in enumerate(events):
        sl = slots.get(ev.user_id)
        if sl is None:
            sl = slots[ev.user_id] = key_slot(key(ev.user_id))
        groups.setdefault(sl, []).append(i)
    return groups


def per_slot(values: Mapping[str, Any], key: Any, head: Sequence[Any]) -> list[tuple[list[str], list[Any]]]:
    """A multi-key script's calls on a cluster: ``(keys, [*head, *their values])`` per slot of
    ``key(name)`` for each ``name -> value``."""
    out: dict[int, tuple[list[str], list[Any]]] = {}
    for name, value in values.items():
        k = key(name)
        keys, args = out.setdefault(key_slot(k), ([], list(head)))
        keys.append(k)
        args.append(value)
    return list(out.values())


def refusal(exc: BaseException) -> TransientError | None:
    """The apply script's refusal ``exc`` as our error: ``NOSTATE`` (no state marker)
    :class:`StateLostError`, ``LOSTWRITES`` :class:`LostWritesError`; None: not a refusal."""
    msg = str(exc)
    if "NOSTATE" in msg:
        return StateLostError(STATE_LOST)
    if "LOSTWRITES" in msg:
        return LostWritesError(f"redis: {msg[msg.index('LOSTWRITES'):]}")
    return None


def wait_commands(client: Any, cluster: bool, slots: Any, replicas: int, timeout_ms: int) -> list[tuple[Any, ...]]:
    """``WAIT`` commands to send after a batch's calls, one per master written (on its
    connection: WAIT counts the writes of its own connection), for ``eval_calls``' ``after``."""
    if not replicas:
        return []
    if not cluster:
        return [("WAIT", replicas, timeout_ms)]
    nodes = {}
    for sl in slots:
        node = client.nodes_manager.get_node_from_slot(sl)
        nodes[node.name] = node
    return [("WAIT", replicas, timeout_ms, {"target_nodes": n}) for n in nodes.values()]


def check_waits(acks: Sequence[object], replicas: int, timeout_ms: int) -> None:
    """Raise when a master had fewer replicas acknowledge the batch than asked for (a replica
    down or lagging: the batch is retried, which is harmless) or its WAIT failed."""
    for a in acks:
        if isinstance(a, BaseException):
            raise a
        if int(a) < replicas:  # type: ignore[call-overload]
            raise TransientError(f"redis: a master had {a} of {replicas} replicas acknowledge a batch within "
                                 f"{timeout_ms} ms (ATTNREC_REDIS_WAIT_REPLICAS): retried")


@dataclass(frozen=True)
class LostWrite:
    """A group that lost writes: its progress for ``field`` (``<topic>:<partition>``) is
    ``have`` while this worker had applied up to ``applied`` there (``slot`` None: one Redis)."""

    slot: int | None
    field: str
    have: int
    applied: int

    @classmethod
    def parse(cls, slot: int | None, reply: str) -> LostWrite:
        """From the script's reply ``LOSTWRITES <progress key> <field> <have> <applied>``."""
        _, _, f, have, applied = reply[reply.index("LOSTWRITES"):].split()[:5]
        return cls(slot, f, int(have), int(applied))


def lost_writes_message(lost: Sequence[LostWrite]) -> str:
    """What the operator reads: which partitions lost what, where to replay from, the ways out."""
    by_field: dict[str, list[LostWrite]] = {}
    for w in lost:
        by_field.setdefault(w.field, []).append(w)
    parts = []
    for f, ws in sorted(by_field.items()):
        have = min(w.have for w in ws)
        where = "Redis" if ws[0].slot is None else f"Redis ({len(ws)} slot(s), e.g. slot {ws[0].slot})"
        parts.append(f"{f}: {where} holds it up to offset {have}, this worker had applied up to "
                     f"{max(w.applied for w in ws)}: replay from offset {have + 1}")
    return ("Redis lost writes it had acknowledged (a failover to a replica that had not received them, or a restart "
            "that lost the AOF's tail): " + "; ".join(parts) + ". Those events are missing from users' buffers and "
            "Kafka will not redeliver them, so batches are paused. To replay them: stop the workers, reset the "
            "consumer group's offset of each partition named to its replay offset (kafka-consumer-groups.sh "
            "--reset-offsets --to-offset; the recommendations of the replayed events are published again), start "
            "the workers. To accept the loss: restart the workers.")


class Progress:
    """What this worker applied to each group: per watermark field, the highest offset per slot
    (one entry on one Redis), -1 where none. The apply script checks that each group's progress
    still holds it (:meth:`checks`)."""

    def __init__(self, cluster: bool) -> None:
        self.size = HASH_SLOTS if cluster else 1
        self.applied: dict[str, np.ndarray] = {}

    def checks(self, slot: int | None, fields: Sequence[str]) -> list[tuple[str, int]]:
        """``(field, offset)`` the group's progress must hold, for the fields of a call."""
        i = slot or 0
        return [(f, int(a[i])) for f in fields if (a := self.applied.get(f)) is not None and a[i] >= 0]

    def remember(self, slot: int | None, events: Sequence[tuple[ClickEvent, str, int]]) -> None:
        """After a group's call succeeded: its progress now holds these events' offsets."""
        i = slot or 0
        for _, f, off in events:
            if off < 0:
                continue
            a = self.applied.get(f)
            if a is None:
                a = self.applied[f] = np.full(self.size, -1, dtype=np.int64)
            if a[i] < off:
                a[i] = off

    def remember_groups(self, events: Sequence[tuple[ClickEvent, str, int]],
                        done: Sequence[tuple[int | None, Sequence[int]]]) -> None:  # fmt: skip
        """:meth:`remember` each ``(group, indexes of its events)`` whose call succeeded."""
        for g, idx in done:
            self.remember(g, [events[i] for i in idx])

    def forget(self, slot: int | None = None, *, everything: bool = False) -> None:
        """Forget what was applied to a group (or to all): its state was lost or replaced, and
        what the operator accepts is the new baseline."""
        for a in self.applied.values():
            if everything:
                a[:] = -1
            else:
                a[slot or 0] = -1

    def entries(self) -> list[tuple[str, int, int]]:
        """``(field, slot index, offset)`` of every group applied to."""
        return [(f, int(i), int(a[i])) for f, a in self.applied.items() for i in np.flatnonzero(a >= 0)]

    async def audit(self, client: Any) -> list[LostWrite]:
        """Every group applied to whose progress hash is now below what was applied there."""
        todo = self.entries()
        if not todo:
            return []
        cluster = self.size > 1
        async with client.pipeline(transaction=False) as p:
            for f, i, _ in todo:
                p.hget(progress_key(i if cluster else None), f)
            have = [int(h) if h is not None else -1 for h in await p.execute()]
        return [LostWrite(i if cluster else None, f, h, off) for (f, i, off), h in zip(todo, have, strict=True) if h < off]


class Markers:
    """The state markers of a Redis (one) or a Redis Cluster (one per slot): which to check,
    whether they are there, creating them. ``missing``: slots a call found without one since the
    last complete check (the state guard checks them too)."""

    def __init__(self, client: Any, cluster: bool) -> None:
        self.r = client
        self.cluster = cluster
        self.missing: set[int | None] = set()

    def slots(self) -> list[int | None]:
        """The groups whose marker the state guard checks: the one Redis; on a cluster a spread of
        64 slots (a master that lost its data lost thousands of them) and any slot found without
        one."""
        if not self.cluster:
            return [None]
        return sorted(set(range(0, HASH_SLOTS, HASH_SLOTS // 64)) | {s for s in self.missing if s is not None})

    async def count(self) -> tuple[int, int]:
        """``(present, checked)``: how many of the checked groups' markers exist."""
        slots = self.slots()
        if not self.cluster:
            present = int(await self.r.exists(STATE_KEY))
        else:
            async with self.r.pipeline(transaction=False) as p:
                for sl in slots:
                    p.exists(state_key(sl))
                present = sum(int(x) for x in await p.execute())
        if present == len(slots):
            self.missing.clear()
        return present, len(slots)

    async def mark(self, why: str) -> None:
        """Create the marker (a fresh start, or an operator who accepts the state); on a cluster
        every slot's (16,384 SET NX, pipelined per master)."""
        value = json.dumps({"created_ms": int(time.time() * 1000), "by": why})
        if not self.cluster:
            await self.r.set(STATE_KEY, value, nx=True)
        else:
            for lo in range(0, HASH_SLOTS, 4096):
                async with self.r.pipeline(transaction=False) as p:
                    for sl in range(lo, lo + 4096):
                        p.set(state_key(sl), value, nx=True)
                    await p.execute()
        self.missing.clear()
