"""A batch of an incremental model: which users the step graph can score from their cache, which
need the full graph, and the cache's bookkeeping afterwards (semantics in :mod:`attnrec.stream.cache`).

The processor calls, in order: :meth:`Incremental.lengths` (how many buffer entries Redis should
return per user: a cached user needs only its new entries and the one before), then after the
Redis call :meth:`Incremental.plan` (hits and misses; a miss whose buffer came back short is
read again in full), :meth:`Incremental.score` in the scorer thread (both graphs), and
:meth:`Incremental.commit` on the event loop (caches rolled forward or refilled, the rows of
both graphs merged for the recommendations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from attnrec.stream.buffer import Applied, RedisBuffers
from attnrec.stream.cache import KVCache, UserCache
from attnrec.stream.logic import ModelInputs, Rows, StepInputs, build_inputs, build_step_inputs, merge_scored
from attnrec.stream.metrics import WorkerMetrics
from attnrec.stream.model import LoadedModel

from attnrec.settings import Settings

__all__ = ["Plan", "Incremental"]


@dataclass
class Plan:
    """One batch's split between the graphs."""

    version: str
    full: ModelInputs
    step: StepInputs
    hits: list[tuple[str, UserCache, bytes]] = field(default_factory=list)  # (user, its cache, its new entry)
    seq: dict[str, int] = field(default_factory=dict)
    recent: dict[str, Sequence[bytes]] = field(default_factory=dict)  # miss users' newest entries


class Incremental:
    """The per-user key/value caches of the served incremental model, and the batch logic
    around them."""

    def __init__(self, s: Settings, metrics: WorkerMetrics) -> None:
        self.s = s
        self.metrics = metrics
        self.cache = KVCache(int(s.cache_mb * 2**20), s.cache_dtype)

    def keep(self, model: LoadedModel) -> int:
        """Entries a cache keeps: the attention window and the exclusion window."""
        return max(model.max_len, self.s.exclude_window if self.s.exclude_seen else 1)

    def full_len(self, model: LoadedModel) -> int:
        """Entries the full graph needs: its history, one more for the oldest event's time gap,
        and the exclusion window."""
        return max(model.history_len + 1, self.keep(model))

    def lengths(self, model: LoadedModel, events: Sequence[tuple[Any, str, int]]) -> dict[str, int]:
        """Entries to read back per user: a cached user's new events and the one before them."""
        if self.cache.version != model.version:
            self.cache.reset(model.version)  # a new model: its keys and values are not these
        counts = Counter(ev.user_id for ev, _, _ in events)
        full = self.full_len(model)
        return {u: n + 1 if self.cache.peek(u) is not None else full for u, n in counts.items()}

    async def plan(self, model: LoadedModel, res: Applied, events: Sequence[tuple[Any, str, int]],
                   lengths: dict[str, int], buffers: RedisBuffers) -> Plan:
        """Hits (exactly one new event, cache in step with Redis) and misses, with their inputs."""
        s = self.s
        new = Counter(ev.user_id for (ev, _, _), a in zip(events, res.applied, strict=True) if a)
        hits: list[tuple[str, UserCache, bytes]] = []
        misses: list[str] = []
        for u in res.users:
            c = self.cache.hit(u, res.seq.get(u, 0), new[u])
            if c is not None and res.raw.get(u):
                hits.append((u, c, res.raw[u][0]))
            else:
                misses.append(u)
        full = self.full_len(model)
        short = [u for u in misses if lengths.get(u, full) < full]
        raw = dict(res.raw)
        if short:  # a cached user who still needs the full graph: read its history
            raw.update(await buffers.recent(short, full))
        m = self.metrics
        m.cache_hits.inc(len(hits))
        m.cache_misses.inc(len(misses))
        plan = Plan(model.version,
                    build_inputs(model, raw, misses, exclude_seen=s.exclude_seen, exclude_window=s.exclude_window),
                    build_step_inputs(model, [u for u, _, _ in hits], [e for _, _, e in hits], [c for _, c, _ in hits],
                                      exclude_seen=s.exclude_seen, exclude_window=s.exclude_window),
                    hits, dict(res.seq))
        keep = self.keep(model)
        plan.recent = {u: raw.get(u, [])[:keep] for u in plan.full.users}
        return plan

    @staticmethod
    def score(model: LoadedModel, plan: Plan) -> tuple[tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]:
        """Both graphs on their rows (the scorer thread: onnxruntime releases the GIL)."""
        f, st = plan.full, plan.step
        full = model.run(f.items, f.types, f.gaps, f.exclude) if f.users else None
        step = model.run_step(st.items, st.types, st.gaps, st.cache, st.cache_len, st.exclude) if st.users else None
        return full, step

    def commit(self, model: LoadedModel, plan: Plan,
               outputs: tuple[tuple[np.ndarray, ...] | None, tuple[np.ndarray, ...] | None]) -> tuple[Rows, tuple[np.ndarray, ...]]:
        """Roll the hits' caches forward, refill the misses' from the full graph, and merge the
        rows of both graphs for :func:`attnrec.stream.logic.recommend`."""
        full, step = outputs
        m = self.metrics
        m.rows.labels("full").inc(len(plan.full.users))
        m.rows.labels("step").inc(len(plan.step.users))
        if self.cache.version == plan.version:  # not a batch of a model swapped out meanwhile
            keep = self.keep(model)
            if step is not None:
                for r, (u, c, entry) in enumerate(plan.hits):
                    self.cache.advance(u, c, step[3][r], entry, keep, plan.step.seen[r])
            if full is not None:
                for r, u in enumerate(plan.full.users):
                    self.cache.put(u, full[3][r], int(full[4][r]), plan.seq.get(u, 0), plan.recent[u])
        m.cache_bytes.set(self.cache.bytes)
        m.cache_users.set(len(self.cache))
        m.cache_evictions.set(self.cache.evictions)
        return merge_scored([(plan.full, full), (plan.step, step)])
