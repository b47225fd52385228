"""A candidate version's lists, and the shadow process that computes them off the worker's
event loop (:func:`shadow_process`, started by :class:`attnrec.stream.stages.shadow.Shadow`).

:func:`candidate_lists` scores users from their windows with the candidate's full graph (also
the interleaving path, on the hot path); :func:`incremental_lists` keeps an incremental
candidate's own per-user key/value caches and scores a user in step with one step, as the
serving path does.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnrec.manifest import OOV

from ..core.cache import KVCache
from ..core.inputs import build_inputs, build_step_inputs
from ..core.model import LoadedModel, load_model

__all__ = ["SHADOW_NICE", "candidate_lists", "incremental_lists", "overlap", "shadow_process"]

log = logging.getLogger(__name__)

#: Where SCHED_IDLE is not available: how much lower the shadow process's CPU priority is than
#: the worker's (nice levels).
SHADOW_NICE = 10


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
                      exclude_seen: bool, exclude_window: int, blocked: frozenset[str] = frozenset(),
                      counts: dict[str, int] | None = None) -> dict[str, list[tuple[str, float]]]:
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
    if counts is not None:
        counts["step"] += len(hits)
        counts["full"] += len(misses)
    if hits:
        st = build_step_inputs(model, [u for u, _, _ in hits], [e for _, _, e in hits], [c for _, c, _ in hits],
                               exclude_seen=exclude_seen, exclude_window=exclude_window)
        top, scores, _, new_kv = model.run_step(st.items, st.types, st.gaps, st.cache, st.cache_len,
                                                _with_blocked(model, st.exclude, blocked))
        for r, (u, c, entry) in enumerate(hits):
            cache.advance(u, c, new_kv[r], entry, keep, st.seen[r])
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


def shadow_process(conn: Any, k: int, exclude_seen: bool, exclude_window: int, cache_bytes: int, cache_dtype: str) -> None:
    """The shadow process: load the candidate when told, score each batch it is sent, answer
    with its lists; ends when the worker closes the pipe (or dies)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s shadow: %(message)s")
    _lower_priority()
    model: LoadedModel | None = None
    cache = KVCache(cache_bytes, cache_dtype)
    blocked: frozenset[str] = frozenset()
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg[0] == "stop":
            return
        if msg[0] == "model":
            try:
                model = load_model(Path(msg[1]))
                conn.send(("loaded", model.version, ""))
            except Exception as exc:  # checked by the worker already; a failure here is reported, not fatal
                model = None
                conn.send(("loaded", None, f"{type(exc).__name__}: {exc}"))
            continue
        _, rows, new_blocked = msg
        if new_blocked is not None:
            blocked = new_blocked
        t0 = time.perf_counter()
        out: dict[str, tuple[str, list[str], list[str]]] = {}
        counts = {"step": 0, "full": 0, "lost": 0}
        lost: list[str] = []
        try:
            if model is not None:
                opts = {"k": k, "exclude_seen": exclude_seen, "exclude_window": exclude_window, "blocked": blocked}
                if model.incremental:
                    if cache.version != model.version:
                        cache.reset(model.version)
                    lost = [u for u, r in rows.items() if r[5] and cache.hit(u, r[3], 1) is None]  # cache gone
                    for u in lost:
                        del rows[u]
                    counts["lost"] = len(lost)
                    lists = incremental_lists(model, cache, {u: (r[1], r[3], r[4]) for u, r in rows.items()}, counts=counts,
                                              **opts)
                else:
                    lists = candidate_lists(model, {u: r[1] for u, r in rows.items()}, list(rows), **opts)
                    counts["full"] = len(lists)
                out = {u: (rows[u][0], [i for i, _ in lst], rows[u][2]) for u, lst in lists.items()}
        except Exception:  # one batch lost, never the worker
            log.exception("shadow scoring of a batch failed")
        conn.send(("result", model.version if model is not None else None, out, 1000 * (time.perf_counter() - t0), counts,
                   lost, len(cache) if cache.evictions else -1))


def _lower_priority() -> None:
    """Linux: every thread of this process runs only on CPU nothing else wants (the serving path
    preempts it at once); the threads that imports started (numpy's, onnxruntime's) too, and the
    ones started later inherit it. Elsewhere: nice +10."""
    try:
        for tid in [int(t) for t in os.listdir("/proc/self/task")]:
            os.sched_setscheduler(tid, os.SCHED_IDLE, os.sched_param(0))
    except (OSError, AttributeError, ValueError):
        try:
            os.nice(SHADOW_NICE)
        except OSError as exc:
            log.warning("shadow process keeps the worker's CPU priority: %s", exc)


