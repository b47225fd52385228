"""Shadow scoring: a candidate version scores the serving model's rows off the hot path.

The candidate (``attnrec models shadow VERSION``: the registry's ``SHADOW`` pointer, loaded and
checked by the model watcher like a promotion) scores a ``SHADOW_FRACTION`` of batches, after
the batch's recommendations are handed to the producer, in its own thread at a lower CPU
priority, one batch at a time and in order (so an incremental candidate's caches stay in step,
as the serving ones do); a batch that finds ``max_pending`` batches already queued is not
shadowed (counted as ``busy``), so a candidate slower than the stream costs a bounded queue,
never work in front of the serving path.
Its lists are never published. What is kept, per candidate version:

- overlap@10 with the serving model's list for the same user and trigger;
- the online HR@10 / NDCG@10 of its list (source ``shadow``) and, on exactly the same triggers,
  of the serving model's (source ``shadow-base``), scored on the user's next event by
  :class:`stream.online.OnlineEval` like every other source: the pair the promotion gate
  compares;
- the candidate's scoring time per batch.

The candidate sees each row's window as the serving rows hold it (an incremental model's cached
user: its newest ``max_len`` events), with the same exclusions: the user's recent items and the
policy's blocked items (cool-downs are not applied to shadow lists). An incremental candidate
keeps its own per-user key/value caches (``CACHE_MB`` more memory at most) and scores a user
with one new event since its last shadowed batch by its step graph, like the serving path; the
others go through its full graph over the window (a user whose history is longer than the
window the serving rows hold gets a cache built from that window).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from attnrec.manifest import OOV
from stream.cache import KVCache
from stream.logic import build_inputs, build_step_inputs
from stream.model import LoadedModel

__all__ = ["SHADOW_NICE", "ShadowResult", "Shadow", "candidate_lists", "incremental_lists", "overlap"]

log = logging.getLogger(__name__)

#: How much lower the shadow thread's CPU priority is than the worker's (Linux nice levels).
SHADOW_NICE = 10


@dataclass
class ShadowResult:
    version: str  # the candidate's
    lists: dict[str, tuple[str, list[str], list[str]]]  # user -> (trigger event id, candidate's list, serving list)
    ms: float  # the candidate's scoring time for the batch


def _with_blocked(model: LoadedModel, exclude: np.ndarray, blocked: frozenset[str]) -> np.ndarray:
    idx = [j for i in blocked if (j := model.item_index.get(i.encode())) is not None]
    if not idx or not len(exclude):
        return exclude
    glob = np.asarray(sorted(idx), dtype=np.int64)
    return np.ascontiguousarray(np.concatenate([exclude, np.broadcast_to(glob, (len(exclude), glob.size))], axis=1))


def _lists(model: LoadedModel, users: Sequence[str], top: np.ndarray, scores: np.ndarray, k: int
           ) -> dict[str, list[tuple[str, float]]]:
    ok = (top > OOV) & np.isfinite(scores)
    ids = model.item_ids
    top_l, sc_l, ok_l = top.tolist(), np.round(np.where(ok, scores, 0.0).astype(np.float64), 4).tolist(), ok.tolist()
    return {u: [(ids[i], sc) for i, sc, good in zip(top_l[r], sc_l[r], ok_l[r], strict=True) if good][:k]
            for r, u in enumerate(users)}


def candidate_lists(model: LoadedModel, windows: Mapping[str, Sequence[bytes]], users: Sequence[str], *, k: int,
                    exclude_seen: bool, exclude_window: int, blocked: frozenset[str] = frozenset()
                    ) -> dict[str, list[tuple[str, float]]]:
    """``model``'s top-``k`` (item id, score) per user from the users' raw windows (newest
    first), excluding the window's items (with ``exclude_seen``) and ``blocked``; users without
    a usable history get no list."""
    inputs = build_inputs(model, windows, users, exclude_seen=exclude_seen, exclude_window=exclude_window)
    if not inputs.users:
        return {}
    top, scores = model.run(inputs.items, inputs.types, inputs.gaps, _with_blocked(model, inputs.exclude, blocked))[:2]
    return _lists(model, inputs.users, top, scores, k)


def incremental_lists(model: LoadedModel, cache: KVCache, rows: Mapping[str, tuple[Sequence[bytes], int, int]], *, k: int,
                      exclude_seen: bool, exclude_window: int, blocked: frozenset[str] = frozenset()
                      ) -> dict[str, list[tuple[str, float]]]:
    """:func:`candidate_lists` for an incremental ``model`` with its own per-user ``cache``:
    ``rows`` are user -> (window newest first, the user's Redis ``#seq``, its new events in the
    batch). A user with exactly one new event and a cache in step is scored by the step graph;
    the others by the full graph over the window, which refills their caches."""
    if cache.version != model.version:
        cache.reset(model.version)
    keep = max(model.max_len, exclude_window if exclude_seen else 1)
    hits, misses = [], []
    for u, (window, seq, new) in rows.items():
        c = cache.hit(u, seq, new) if window else None
        if c is not None:
            hits.append((u, c, window[0]))
        else:
            misses.append(u)
    out: dict[str, list[tuple[str, float]]] = {}
    if hits:
        st = build_step_inputs(model, [u for u, _, _ in hits], [e for _, _, e in hits], [c for _, c, _ in hits],
                               exclude_seen=exclude_seen, exclude_window=exclude_window)
        top, scores, _, new_kv = model.run_step(st.items, st.types, st.gaps, st.cache, st.cache_len,
                                                _with_blocked(model, st.exclude, blocked))
        for r, (u, c, entry) in enumerate(hits):
            cache.advance(u, c, new_kv[r], entry, keep)
        out.update(_lists(model, st.users, top, scores, k))
    if misses:
        windows = {u: rows[u][0] for u in misses}
        f = build_inputs(model, windows, misses, exclude_seen=exclude_seen, exclude_window=exclude_window)
        if f.users:
            top, scores, _, kv, n = model.run(f.items, f.types, f.gaps, _with_blocked(model, f.exclude, blocked))
            for r, u in enumerate(f.users):
                cache.put(u, kv[r], int(n[r]), rows[u][1], list(windows[u][:keep]))
            out.update(_lists(model, f.users, top, scores, k))
    return out


def overlap(a: Sequence[str], b: Sequence[str], k: int = 10) -> float:
    """|top-k(a) ∩ top-k(b)| / k."""
    return len(set(a[:k]) & set(b[:k])) / k


def _lower_priority() -> None:
    try:  # Linux: a thread's nice value is its own
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), SHADOW_NICE)
    except (OSError, AttributeError) as exc:
        log.warning("shadow thread keeps the worker's CPU priority: %s", exc)


class Shadow:
    """The candidate model, its thread and its finished results (drained by the event loop)."""

    def __init__(self, fraction: float, *, k: int, exclude_seen: bool, exclude_window: int,
                 cache_bytes: int = 256 * 2**20, cache_dtype: str = "float32", max_pending: int = 16) -> None:
        self.fraction = fraction
        self.k, self.exclude_seen, self.exclude_window = k, exclude_seen, exclude_window
        self.model: LoadedModel | None = None
        self.cache = KVCache(cache_bytes, cache_dtype)  # an incremental candidate's own key/value caches
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow", initializer=_lower_priority)
        self.max_pending = max_pending  # batches queued for the shadow thread at most
        self._pending = 0
        self._lock = threading.Lock()
        self._credit = 0.0  # SHADOW_FRACTION's share of batches, accumulated
        self.done: deque[ShadowResult] = deque()
        self.skipped = {"busy": 0, "fraction": 0}

    def set_model(self, m: LoadedModel | None) -> None:
        old = self.model.version if self.model is not None else None
        self.model = m
        if m is not None:
            log.info("shadow scoring with %s (%.0f%% of batches)", m.version, 100 * self.fraction)
        elif old is not None:
            log.info("shadow scoring of %s stopped", old)

    def submit(self, rows: Mapping[str, tuple[str, Sequence[bytes], list[str], int, int]], blocked: frozenset[str]) -> str:
        """Score ``rows`` (user -> (trigger event id, window newest first, serving list, Redis
        ``#seq``, new events in the batch)) with the candidate in the shadow thread; returns
        ``scored``, ``busy``, ``fraction`` or ``off``."""
        m = self.model
        if m is None or not rows:
            return "off"
        self._credit += self.fraction
        if self._credit < 1.0:
            self.skipped["fraction"] += 1
            return "fraction"
        self._credit -= 1.0
        with self._lock:
            if self._pending >= self.max_pending:
                self.skipped["busy"] += 1
                return "busy"
            self._pending += 1
        self._pool.submit(self._score, m, dict(rows), blocked)
        return "scored"

    @property
    def idle(self) -> bool:
        """Nothing queued or scoring."""
        return self._pending == 0

    def _score(self, m: LoadedModel, rows: dict[str, tuple[str, Sequence[bytes], list[str], int, int]],
               blocked: frozenset[str]) -> None:
        try:
            t0 = time.perf_counter()
            opts = {"k": self.k, "exclude_seen": self.exclude_seen, "exclude_window": self.exclude_window, "blocked": blocked}
            if m.incremental:
                lists = incremental_lists(m, self.cache, {u: (r[1], r[3], r[4]) for u, r in rows.items()}, **opts)
            else:
                lists = candidate_lists(m, {u: r[1] for u, r in rows.items()}, list(rows), **opts)
            ms = 1000 * (time.perf_counter() - t0)
            self.done.append(ShadowResult(m.version, {u: (rows[u][0], [i for i, _ in lst], rows[u][2])
                                                      for u, lst in lists.items()}, ms))
        except Exception:  # the shadow must never take the worker down
            log.exception("shadow scoring of a batch with %s failed", m.version)
        finally:
            with self._lock:
                self._pending -= 1

    def drain(self) -> list[ShadowResult]:
        out = []
        while self.done:
            out.append(self.done.popleft())
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
