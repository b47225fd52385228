"""The batch the core hands to its stages, the stage interface, and the hooks of the configured
stages in order (:class:`Stages`).

The core (:mod:`attnrec.stream.core.processor`) is what every deployment runs: parse, apply to
Redis, score, recommend, send and commit. Everything else is a :class:`Stage`, built in one place
from the settings (:func:`attnrec.stream.stages.build_stages`) and absent from the batch loop when
it is not configured: the processor calls a hook only on the stages that override it and are
active, so a deployment pays only for what it turns on.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnrec.events import ClickEvent

from .buffer import Applied
from .model import LoadedModel
from .recommend import Recommendation, Rows
from .records import Parsed, RawRecord

__all__ = ["HOOKS", "Batch", "Stage", "Stages"]

#: The hooks a stage may override, in the order a batch meets them (``run`` is the stage's own
#: background task; ``swap`` runs between batches).
HOOKS = ("swap", "begin", "exclude", "rewrite", "observe", "step")
_NONE: frozenset[str] = frozenset()


@dataclass
class Batch:
    """One batch on its way through the core: what the core knows and what stages read or set."""

    records: Sequence[RawRecord]
    parsed: Parsed = field(default_factory=Parsed)
    exclude_seen: bool = True
    model: LoadedModel | None = None  # the version that scores the whole batch
    applied: Applied | None = None  # Redis's answer: per-event codes, the users' entries, their #seq
    rows: Rows | None = None  # the scored rows (users, windows newest first), whichever graph scored them
    triggers: dict[str, ClickEvent] = field(default_factory=dict)  # user -> the event its recommendation answers
    recs: list[Recommendation] = field(default_factory=list)
    #: set by stages in ``begin``: items no list of this batch may hold, and the items a user's
    #: window holds back (cool-downs); the core keeps both out of the graph's top-K and the fallbacks
    blocked: frozenset[str] = _NONE
    held: Callable[[Sequence[bytes]], Collection[str]] | None = None
    plan: Any = None  # the core's: the model inputs (attnrec.stream.core.scoring.Plan)
    scoring: Awaitable[Any] | None = None  # the core's: the model run in the scorer thread, or its result
    t0: float = field(default_factory=time.perf_counter)
    t1: float = 0.0  # Redis done
    t2: float = 0.0  # scores in hand
    _rows_index: dict[str, int] | None = field(default=None, repr=False)
    _eligible: dict[str, tuple[Collection[bytes], Collection[str]]] = field(default_factory=dict, repr=False)
    #: stages' own per-batch data, by stage name (two batches can be in flight at once)
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def events(self) -> list[ClickEvent]:
        return [ev for ev, _, _ in self.parsed.events]

    def window(self, user: str) -> Sequence[bytes]:
        """The user's newest-first entries: its scored row's window, else what Redis returned."""
        if self.rows is not None:
            i = self._row_of().get(user)
            if i is not None:
                return self.rows.windows[i]
        raw = self.applied.raw.get(user) if self.applied is not None else None
        return raw or ()

    def _row_of(self) -> dict[str, int]:
        if self._rows_index is None:
            assert self.rows is not None
            self._rows_index = {u: i for i, u in enumerate(self.rows.users)}
        return self._rows_index

    def keep_out(self, user: str) -> Collection[str]:
        """Items that no list for ``user`` may hold besides its own seen items: ``blocked`` and
        what its window holds back."""
        if self.held is None:
            return self.blocked
        held = self.held(self.window(user))
        return self.blocked | set(held) if held else self.blocked

    def block(self, blocked: frozenset[str]) -> None:
        """Replace ``blocked`` (a stage saw the shared state move during the batch): the lists
        picked from now on obey the new set."""
        self.blocked = blocked
        self._eligible.clear()

    def pick(self, candidates: Sequence[tuple[str, bytes]], n: int, user: str) -> list[str]:
        """The first ``n`` of ``candidates`` (item id, its UTF-8 bytes) that ``user`` may be shown:
        not in its window (when seen items are excluded) nor kept out."""
        got = self._eligible.get(user)
        if got is None:
            window = self.window(user)
            seen = {e.split(b"|", 2)[2] for e in window} if self.exclude_seen else _NONE
            got = self._eligible[user] = (seen, self.keep_out(user))
        seen, out_ = got
        out: list[str] = []
        for i, b in candidates:
            if b not in seen and i not in out_:
                out.append(i)
                if len(out) == n:
                    break
        return out


class Stage:
    """A feature on the batch path. Override only the hooks you need (the others are never
    called); keep ``active`` False while there is nothing to do (e.g. no shadow version).

    - ``swap(model) -> bool``: between batches, every configured stage, with the model that
      serves the next batch; True when ``active`` changed (the hooks are wired again).
    - ``begin(batch)`` (async): before Redis; refresh shared state, set ``batch.blocked`` /
      ``batch.held``.
    - ``exclude(batch, rows) -> ndarray | None``: item indices (rows x E, padded with OOV) kept
      out of the graph's top-K for ``rows`` (a full or a step graph's inputs).
    - ``rewrite(batch)`` (async): after scoring; change or replace lists in ``batch.recs``,
      attach record headers or other sources' lists.
    - ``observe(batch)``: once the batch's records are handed to the producer: count, remember,
      hand work elsewhere. Never raises on purpose.
    - ``step(batch, name)``: at each step of the core (``STEPS`` of the processor).
    - ``run()`` (async, forever): background work, started with the worker (e.g. a flush every
      second).
    """

    name = "stage"
    active = True

    def swap(self, model: LoadedModel | None) -> bool:
        return False

    async def begin(self, batch: Batch) -> None:
        pass

    def exclude(self, batch: Batch, rows: Any) -> np.ndarray | None:
        return None

    async def rewrite(self, batch: Batch) -> None:
        pass

    def observe(self, batch: Batch) -> None:
        pass

    def step(self, batch: Batch, name: str) -> None:
        pass

    async def run(self) -> None:
        pass

    def close(self) -> None:
        pass


def _overrides(stage: Stage, hook: str) -> bool:
    return getattr(type(stage), hook) is not getattr(Stage, hook)


class Stages:
    """The configured stages in order, and per hook the bound methods of those that override it
    and are active. A stage that wants each stage's cost (the benchmark's profile) sets
    ``timer``: every hook call is then charged to its stage."""

    def __init__(self, stages: Sequence[Stage] = ()) -> None:
        self.all = list(stages)
        names = [s.name for s in self.all]
        assert len(set(names)) == len(names), f"two stages share a name: {names}"
        self.timer: Callable[[str, float, float], None] | None = None  # (stage, wall s, thread CPU s)
        self._wire()

    def __getitem__(self, name: str) -> Stage:
        for s in self.all:
            if s.name == name:
                return s
        raise KeyError(name)

    def get(self, name: str) -> Stage | None:
        return next((s for s in self.all if s.name == name), None)

    @property
    def names(self) -> list[str]:
        """The active stages, in order."""
        return [s.name for s in self.all if s.active]

    def _wire(self) -> None:
        self._swap = [s.swap for s in self.all if _overrides(s, "swap")]  # every configured stage
        on = [s for s in self.all if s.active]
        self._begin = [self._timed(s, s.begin, True) for s in on if _overrides(s, "begin")]
        self._exclude = [self._timed(s, s.exclude) for s in on if _overrides(s, "exclude")]
        self._rewrite = [self._timed(s, s.rewrite, True) for s in on if _overrides(s, "rewrite")]
        self._observe = [self._timed(s, s.observe) for s in on if _overrides(s, "observe")]
        self._step = [s.step for s in on if _overrides(s, "step")]

    def _timed(self, stage: Stage, f: Any, is_async: bool = False) -> Any:
        timer = self.timer
        if timer is None:
            return f
        name = stage.name

        def wrapped(*a: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            r = f(*a)
            timer(name, time.perf_counter() - t, time.thread_time() - c)
            return r

        async def wrapped_async(*a: Any) -> Any:
            t, c = time.perf_counter(), time.thread_time()
            r = await f(*a)
            timer(name, time.perf_counter() - t, time.thread_time() - c)
            return r

        return wrapped_async if is_async else wrapped

    def time_each(self, timer: Callable[[str, float, float], None] | None) -> None:
        """Charge every hook call to its stage (``timer(stage, wall s, CPU s)``), or stop."""
        self.timer = timer
        self._wire()

    # ------------------------------------------------------------------ the hooks, for the core
    def swap(self, model: LoadedModel | None) -> None:
        if any([f(model) for f in self._swap]):
            self._wire()

    async def begin(self, batch: Batch) -> None:
        for f in self._begin:
            await f(batch)

    def exclude(self, batch: Batch, rows: Any) -> None:
        """Add the stages' exclusions to ``rows.exclude`` (one concatenation)."""
        if rows is None or not rows.users or not self._exclude:
            return
        parts = [rows.exclude]
        for f in self._exclude:
            extra = f(batch, rows)
            if extra is not None and extra.size:
                parts.append(extra)
        if len(parts) > 1:
            rows.exclude = np.ascontiguousarray(np.concatenate(parts, axis=1))

    async def rewrite(self, batch: Batch) -> None:
        for f in self._rewrite:
            await f(batch)

    def observe(self, batch: Batch) -> None:
        for f in self._observe:
            f(batch)

    def step(self, batch: Batch, name: str) -> None:
        for f in self._step:
            f(batch, name)

    def tasks(self) -> list[Callable[[], Awaitable[None]]]:
        """The background tasks of the stages that have one."""
        return [s.run for s in self.all if _overrides(s, "run")]

    def close(self) -> None:
        for s in self.all:
            s.close()
