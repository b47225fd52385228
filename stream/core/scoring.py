"""What the model reads and how it runs, for the version serving a batch: :class:`Scoring`.

A window model scores every user with the full graph over its newest ``max_len`` entries. An
incremental model (relative positions; semantics in :mod:`attnrec.stream.core.cache`) scores a
user whose key/value cache is in step with Redis with one step over the cache, and the others
with the full graph over their history, which refills their caches.

The processor calls, in order: :meth:`Scoring.apply` (the batch into Redis, reading back each
user's entries: a cached user needs only its new entries and the one before), :meth:`plan`
(hits and misses with their inputs; a miss whose entries came back short is read again in
full), :meth:`run` in the scorer thread (both graphs), and :meth:`commit` on the event loop
(caches rolled forward or refilled, the rows of both graphs merged for the recommendations).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnrec.settings import Settings

from .buffer import Applied, RedisBuffers
from .cache import KVCache, UserCache
from .inputs import ModelInputs, StepInputs, build_inputs, build_step_inputs
from .metrics import WorkerMetrics
from .model import LoadedModel
from .recommend import Rows, merge_scored

__all__ = ["Plan", "Scoring"]

Outputs = tuple[np.ndarray, ...]


@dataclass
class Plan:
    """One batch's rows per graph (``step`` only for an incremental model's cached users)."""

    version: str
    full: ModelInputs
    step: StepInputs | None = None
    hits: list[tuple[str, UserCache, bytes]] = field(default_factory=list)  # (user, its cache, its new entry)
    seq: dict[str, int] = field(default_factory=dict)
    recent: dict[str, Sequence[bytes]] = field(default_factory=dict)  # full-graph users' newest entries

    @property
    def parts(self) -> list[ModelInputs | StepInputs]:
        """The rows of each graph that has any."""
        return [p for p in (self.full, self.step) if p is not None and p.users]


class Scoring:
    """The served model's inputs and runs, and an incremental model's per-user caches."""

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
        if not model.incremental:
            return max(model.max_len + 1, self.s.exclude_window if self.s.exclude_seen else 0)
        return max(model.history_len + 1, self.keep(model))

    async def apply(self, model: LoadedModel | None, events: Sequence[tuple[Any, str, int]],
                    buffers: RedisBuffers) -> Applied:
        """Apply the batch's events to Redis and read back what scoring needs of each user."""
        if model is None:
            return await buffers.apply(events, return_len=self.s.exclude_window if self.s.exclude_seen else 0)
        if not model.incremental:
            return await buffers.apply(events, return_len=self.full_len(model))
        return await buffers.apply(events, return_len=self.full_len(model), user_len=self._lengths(model, events))

    def _lengths(self, model: LoadedModel, events: Sequence[tuple[Any, str, int]]) -> dict[str, int]:
        """Entries to read back per user: a cached user's new events and the one before them."""
        if self.cache.version != model.version:
            self.cache.reset(model.version)  # a new model: its keys and values are not these
        counts = Counter(ev.user_id for ev, _, _ in events)
        full = self.full_len(model)
        return {u: n + 1 if self.cache.peek(u) is not None else full for u, n in counts.items()}

    async def plan(self, model: LoadedModel, res: Applied, events: Sequence[tuple[Any, str, int]],
                   buffers: RedisBuffers) -> Plan:
        """The rows of each graph: for an incremental model, hits (exactly one new event, cache
        in step with Redis) and misses."""
        s = self.s
        opts = {"exclude_seen": s.exclude_seen, "exclude_window": s.exclude_window}
        if not model.incremental:
            return Plan(model.version, build_inputs(model, res.raw, res.users, **opts))
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
        raw = dict(res.raw)
        short = [u for u in misses if len(raw.get(u) or ()) < full and self.cache.peek(u) is not None]
        if short:  # a cached user who still needs the full graph: read its history
            raw.update(await buffers.recent(short, full))
        self.metrics.cache_hits.inc(len(hits))
        self.metrics.cache_misses.inc(len(misses))
        plan = Plan(model.version, build_inputs(model, raw, misses, **opts),
                    build_step_inputs(model, [u for u, _, _ in hits], [e for _, _, e in hits], [c for _, c, _ in hits],
                                      **opts),
                    hits, dict(res.seq))
        keep = self.keep(model)
        plan.recent = {u: raw.get(u, [])[:keep] for u in plan.full.users}
        return plan

    @staticmethod
    def run(model: LoadedModel, plan: Plan) -> tuple[Outputs | None, Outputs | None]:
        """Both graphs on their rows (the scorer thread: onnxruntime releases the GIL)."""
        f, st = plan.full, plan.step
        full = model.run(f.items, f.types, f.gaps, f.exclude) if f.users else None
        step = None
        if st is not None and st.users:
            step = model.run_step(st.items, st.types, st.gaps, st.cache, st.cache_len, st.exclude)
        return full, step

    def commit(self, model: LoadedModel, plan: Plan, outputs: tuple[Outputs | None, Outputs | None]
               ) -> tuple[Rows, Outputs]:
        """Roll the hits' caches forward, refill the misses', and merge the rows of both graphs
        for :func:`attnrec.stream.core.recommend.recommend`."""
        full, step = outputs
        if model.incremental:
            m = self.metrics
            m.rows.labels("full").inc(len(plan.full.users))
            m.rows.labels("step").inc(len(plan.step.users) if plan.step is not None else 0)
            if self.cache.version == plan.version:  # not a batch of a model swapped out meanwhile
                keep = self.keep(model)
                if step is not None and plan.step is not None:
                    for r, (u, c, entry) in enumerate(plan.hits):
                        self.cache.advance(u, c, step[3][r], entry, keep, plan.step.seen[r])
                if full is not None:
                    for r, u in enumerate(plan.full.users):
                        self.cache.put(u, full[3][r], int(full[4][r]), plan.seq.get(u, 0), plan.recent[u])
            m.cache_bytes.set(self.cache.bytes)
            m.cache_users.set(len(self.cache))
            m.cache_evictions.set(self.cache.evictions)
        return merge_scored([(plan.full, full), (plan.step, step)])
