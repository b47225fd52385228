"""Shadow scoring: a candidate version scores the serving model's rows off the hot path.

The candidate (``attnrec models shadow VERSION``: the registry's ``SHADOW`` pointer, loaded and
checked by the model watcher like a promotion) scores a ``SHADOW_FRACTION`` of batches, after
the batch's recommendations are handed to the producer, in its own thread at a lower CPU
priority, one batch at a time: a batch that finds the shadow still busy is not shadowed
(counted as ``busy``), so a slow candidate can never queue work in front of the serving path.
Its lists are never published. What is kept, per candidate version:

- overlap@10 with the serving model's list for the same user and trigger;
- the online HR@10 / NDCG@10 of its list (source ``shadow``) and, on exactly the same triggers,
  of the serving model's (source ``shadow-base``), scored on the user's next event by
  :class:`stream.online.OnlineEval` like every other source: the pair the promotion gate
  compares;
- the candidate's scoring time per batch.

The candidate sees each row's window as the serving rows hold it (an incremental model's cached
user: its newest ``max_len`` events), with the same exclusions: the user's recent items and the
policy's blocked items (cool-downs are not applied to shadow lists).
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
from stream.logic import build_inputs
from stream.model import LoadedModel

__all__ = ["SHADOW_NICE", "ShadowResult", "Shadow", "candidate_lists", "overlap"]

log = logging.getLogger(__name__)

#: How much lower the shadow thread's CPU priority is than the worker's (Linux nice levels).
SHADOW_NICE = 10


@dataclass
class ShadowResult:
    version: str  # the candidate's
    lists: dict[str, tuple[str, list[str], list[str]]]  # user -> (trigger event id, candidate's list, serving list)
    ms: float  # the candidate's scoring time for the batch


def candidate_lists(model: LoadedModel, windows: Mapping[str, Sequence[bytes]], users: Sequence[str], *, k: int,
                    exclude_seen: bool, exclude_window: int, blocked: frozenset[str] = frozenset()
                    ) -> dict[str, list[tuple[str, float]]]:
    """``model``'s top-``k`` (item id, score) per user from the users' raw windows (newest
    first), excluding the window's items (with ``exclude_seen``) and ``blocked``; users without
    a usable history get no list."""
    inputs = build_inputs(model, windows, users, exclude_seen=exclude_seen, exclude_window=exclude_window)
    if not inputs.users:
        return {}
    exclude = inputs.exclude
    idx = [j for i in blocked if (j := model.item_index.get(i.encode())) is not None]
    if idx:
        glob = np.asarray(sorted(idx), dtype=np.int64)
        exclude = np.ascontiguousarray(np.concatenate([exclude, np.broadcast_to(glob, (len(inputs.users), glob.size))], axis=1))
    top, scores = model.run(inputs.items, inputs.types, inputs.gaps, exclude)[:2]
    ok = (top > OOV) & np.isfinite(scores)
    ids = model.item_ids
    top_l, sc_l, ok_l = top.tolist(), np.round(np.where(ok, scores, 0.0).astype(np.float64), 4).tolist(), ok.tolist()
    return {u: [(ids[i], sc) for i, sc, good in zip(top_l[r], sc_l[r], ok_l[r], strict=True) if good][:k]
            for r, u in enumerate(inputs.users)}


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

    def __init__(self, fraction: float, *, k: int, exclude_seen: bool, exclude_window: int) -> None:
        self.fraction = fraction
        self.k, self.exclude_seen, self.exclude_window = k, exclude_seen, exclude_window
        self.model: LoadedModel | None = None
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shadow", initializer=_lower_priority)
        self._busy = False
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

    def submit(self, rows: Mapping[str, tuple[str, Sequence[bytes], list[str]]], blocked: frozenset[str]) -> str:
        """Score ``rows`` (user -> (trigger event id, window, serving list)) with the candidate
        in the shadow thread; returns ``scored``, ``busy``, ``fraction`` or ``off``."""
        m = self.model
        if m is None or not rows:
            return "off"
        self._credit += self.fraction
        if self._credit < 1.0:
            self.skipped["fraction"] += 1
            return "fraction"
        self._credit -= 1.0
        if self._busy:
            self.skipped["busy"] += 1
            return "busy"
        self._busy = True
        self._pool.submit(self._score, m, dict(rows), blocked)
        return "scored"

    def _score(self, m: LoadedModel, rows: dict[str, tuple[str, Sequence[bytes], list[str]]], blocked: frozenset[str]) -> None:
        try:
            t0 = time.perf_counter()
            windows = {u: w for u, (_, w, _) in rows.items()}
            lists = candidate_lists(m, windows, list(rows), k=self.k, exclude_seen=self.exclude_seen,
                                    exclude_window=self.exclude_window, blocked=blocked)
            ms = 1000 * (time.perf_counter() - t0)
            self.done.append(ShadowResult(m.version, {u: (rows[u][0], [i for i, _ in lst], rows[u][2])
                                                      for u, lst in lists.items()}, ms))
        except Exception:  # the shadow must never take the worker down
            log.exception("shadow scoring of a batch with %s failed", m.version)
        finally:
            self._busy = False

    def drain(self) -> list[ShadowResult]:
        out = []
        while self.done:
            out.append(self.done.popleft())
        return out

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
