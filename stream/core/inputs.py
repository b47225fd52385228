"""Buffers in, model inputs out: the newest-first Redis entries of a batch's users become the
index arrays of the full graph (:func:`build_inputs`) or, for users scored from their key/value
cache, of the step graph (:func:`build_step_inputs`). Pure: no Kafka, no Redis."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnrec.manifest import OOV

from .entries import split_entry
from .model import LoadedModel

__all__ = ["EntryTable", "ModelInputs", "build_inputs", "StepInputs", "build_step_inputs"]


class EntryTable:
    """Parsed buffer entries, memoised for one model version: raw entry bytes -> a row of
    (item index, event-type index, ts) columns.

    Every batch re-reads each user's whole window from Redis, so almost every entry was seen
    in an earlier batch; splitting and looking it up again cost ~0.6 µs per entry (30 µs per
    event at L=50), more than the model. A row lookup is one dict probe. Bounded: the table
    starts over when ``capacity`` rows are used (≈ the windows of ``capacity / 51`` users).
    """

    def __init__(self, model: LoadedModel, capacity: int = 1 << 19) -> None:
        self.item_index = model.item_index
        self.type_index = model.event_type_index
        self.capacity = capacity
        self._row: dict[bytes, int] = {}
        self.cols = np.zeros((3, capacity), dtype=np.int64)  # item index, event-type index, ts

    @classmethod
    def of(cls, model: LoadedModel) -> EntryTable:
        if model.entry_table is None:
            model.entry_table = cls(model)
        return model.entry_table  # type: ignore[no-any-return]

    def rows(self, entries: Sequence[bytes]) -> np.ndarray:
        """Row numbers (int64 array) of ``entries``, parsing the ones not seen before."""
        rows = list(map(self._row.get, entries))
        if None in rows:
            if len(self._row) + len(entries) > self.capacity:
                self._row.clear()
                rows = [None] * len(entries)
            for i, r in enumerate(rows):
                if r is None:
                    e = entries[i]
                    r = self._row.get(e)
                    if r is None:
                        r = self._add(e)
                    rows[i] = r
        return np.array(rows, dtype=np.int64)

    def _add(self, e: bytes) -> int:
        try:
            ts, et, item = split_entry(e)
            t = int(ts)
        except ValueError:
            raise ValueError(f"malformed buffer entry in Redis: {e[:200]!r}") from None
        r = len(self._row)
        self.cols[0, r] = self.item_index.get(item, OOV)
        self.cols[1, r] = self.type_index.get(et, 1)
        self.cols[2, r] = t
        self._row[e] = r
        return r


@dataclass
class ModelInputs:
    items: np.ndarray  # (B, L) int64, left-padded, newest at L-1
    types: np.ndarray  # (B, L) int64
    gaps: np.ndarray  # (B, L) int64
    exclude: np.ndarray  # (B, E) int64
    windows: list[Sequence[bytes]]  # per row: the raw entries at positions L-1, L-2, … (newest first)
    users: list[str]  # row -> user


def _scatter(values: np.ndarray, starts: np.ndarray, counts: np.ndarray, width: int, right: bool) -> np.ndarray:
    """(U, width) int64: row u gets ``values[starts[u] : starts[u] + counts[u]]`` (newest first)
    written from the last column leftwards (``right``) or from the first column rightwards."""
    out = np.zeros((len(counts), width), dtype=np.int64)
    total = int(counts.sum())
    if total:
        row = np.repeat(np.arange(len(counts)), counts)
        j = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)  # rank within the row
        out[row, width - 1 - j if right else j] = values[np.repeat(starts, counts) + j]
    return out


def build_inputs(
    model: LoadedModel,
    raw: Mapping[str, Sequence[bytes]],
    users: Sequence[str],
    *,
    exclude_seen: bool = True,
    exclude_window: int | None = None,
) -> ModelInputs:
    """Turn newest-first raw buffers into left-padded index arrays for the full graph, for the
    users that have a usable history (at least one item the model knows): the newest
    ``history_len`` events (an incremental model's history; a window model's window). Excluded
    from the recommendations: the items of the attention window (the newest ``max_len``) and of
    the newest ``exclude_window`` entries (all returned entries when None)."""
    L_model, with_gaps = model.history_len or model.max_len, model.uses_gaps
    flat: list[bytes] = []
    starts, n_win, n_excl, n_parsed = [], [], [], []
    for u in users:
        ents = raw.get(u) or ()
        n = min(len(ents), L_model)
        seen = min(len(ents), len(ents) if exclude_window is None else exclude_window)
        e = max(min(n, model.max_len), seen) if exclude_seen else n
        k = max(e, min(len(ents), n + 1) if with_gaps else n)  # the gap of the oldest kept event needs one more
        starts.append(len(flat))
        flat.extend(ents[:k])
        n_win.append(n)
        n_excl.append(e)
        n_parsed.append(k)
    table = EntryTable.of(model)
    rows = table.rows(flat)
    item_f = table.cols[0][rows]
    st, nw = np.asarray(starts, dtype=np.int64), np.asarray(n_win, dtype=np.int64)
    width = int(nw.max(initial=0)) or 1
    items = _scatter(item_f, st, nw, width, right=True)
    sel = np.flatnonzero((items > OOV).any(axis=1))  # rows with no known item: fallback
    L = int(nw[sel].max(initial=0)) or 1
    items = items[sel, width - L :]
    st, nw = st[sel], nw[sel]
    if model.uses_types:
        types = _scatter(table.cols[1][rows], st, nw, L, right=True)
    else:
        types = np.zeros_like(items)
    if with_gaps:
        ts = table.cols[2][rows]  # newest first per user: entry i's older neighbour is i + 1
        diff = ts - ts[np.minimum(np.arange(len(ts)) + 1, max(len(ts) - 1, 0))]
        gap = np.searchsorted(model.gap_boundaries_ms, diff, side="right") + 1
        gap[diff < 0] = 0  # clock skew: unknown gap
        # an entry's older neighbour must be of the same user: the last parsed entry has none
        parsed = np.asarray(n_parsed, dtype=np.int64)
        gap[(np.asarray(starts, dtype=np.int64) + parsed - 1)[parsed > 0]] = 0
        gaps = _scatter(gap, st, nw, L, right=True)
    else:
        gaps = np.zeros_like(items)
    if exclude_seen:
        ne = np.asarray(n_excl, dtype=np.int64)[sel]
        exclude = _scatter(item_f, st, ne, int(ne.max(initial=0)) or 1, right=False)
    else:
        exclude = np.zeros((len(sel), 1), dtype=np.int64)
    sel_users = [users[i] for i in sel.tolist()]
    windows = [(raw.get(u) or ())[:n] for u, n in zip(sel_users, nw.tolist(), strict=True)]
    return ModelInputs(items, types, gaps, exclude, windows, sel_users)


@dataclass
class StepInputs:
    """Step-graph inputs: one new event per row and the cache of the events before it."""

    items: np.ndarray  # (H, 1) int64: the new event
    types: np.ndarray  # (H, 1) int64
    gaps: np.ndarray  # (H, 1) int64
    cache: np.ndarray  # (H, blocks, 2, L-1, d) float32, oldest first, left-padded
    cache_len: np.ndarray  # (H,) int64: slots that are events
    exclude: np.ndarray  # (H, E) int64
    windows: list[Sequence[bytes]]  # per row: the new entry, then the previous ones (newest first)
    users: list[str]  # row -> user
    seen: list[np.ndarray] = field(default_factory=list)  # per row: the items of the cache's entries after the event


def build_step_inputs(model: LoadedModel, users: Sequence[str], new: Sequence[bytes], caches: Sequence[Any], *,
                      exclude_seen: bool = True, exclude_window: int = 0) -> StepInputs:
    """Rows for the step graph: each user's new raw entry and its :class:`attnrec.stream.core.cache.UserCache`
    (keys/values, slots in use, the newest entries before the new one). The exclusion list is
    the full graph's (the items of the newest ``max(max_len, exclude_window)`` entries), so a
    step row recommends what a full-graph row would."""
    table = EntryTable.of(model)
    H = len(users)
    keep = max(model.max_len, exclude_window) if exclude_seen else 1
    rows_new = table.rows(new)
    has_prev = np.fromiter((bool(c.recent) for c in caches), dtype=bool, count=H)
    item_new = table.cols[0][rows_new]
    items = item_new.reshape(H, 1)
    types = table.cols[1][rows_new].reshape(H, 1) if model.uses_types else np.zeros((H, 1), dtype=np.int64)
    if model.uses_gaps:
        prev = rows_new.copy()
        prev[has_prev] = table.rows([c.recent[0] for c in caches if c.recent])
        diff = table.cols[2][rows_new] - table.cols[2][prev]
        gap = np.searchsorted(model.gap_boundaries_ms, diff, side="right") + 1
        gap[(diff < 0) | ~has_prev] = 0  # clock skew, or no earlier event: unknown gap
        gaps = gap.reshape(H, 1).astype(np.int64)
    else:
        gaps = np.zeros((H, 1), dtype=np.int64)
    # each row's items after the event, newest first: the cache keeps them (UserCache.seen), so
    # a step parses one entry, not the ~50 of the exclusion window (a third of a step row's time)
    seen = []
    for r, c in enumerate(caches):
        before = c.seen if c.seen is not None else table.cols[0][table.rows(c.recent)]
        seen.append(np.concatenate((item_new[r : r + 1], before[: keep - 1])))
    if exclude_seen:
        exclude = np.zeros((H, max((len(x) for x in seen), default=1)), dtype=np.int64)
        for r, x in enumerate(seen):
            exclude[r, : len(x)] = x
    else:
        exclude = np.zeros((H, 1), dtype=np.int64)
    cache = np.stack([c.kv for c in caches]).astype(np.float32, copy=False) if H else np.zeros((0, *model.cache_shape),
                                                                                                 dtype=np.float32)
    cache_len = np.fromiter((c.n for c in caches), dtype=np.int64, count=H)
    windows = [[e, *c.recent[: model.max_len - 1]] for e, c in zip(new, caches, strict=True)]
    return StepInputs(items, types, gaps, cache, cache_len, exclude, windows, list(users), seen)
