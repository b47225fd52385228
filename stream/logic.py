"""The worker's pure logic: bytes in, decisions out. No Kafka, no Redis, no faust.

The agent (``stream/app.py``) only moves bytes between Kafka, Redis and onnxruntime; every
decision — what is valid, what goes to the dead-letter topic, how a buffer becomes model
input, what a recommendation says — is made here and unit-tested without services.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from attnrec.stream.model import LoadedModel

from attnrec.errors import InvalidEventError
from attnrec.events import ClickEvent, dlq_envelope, parse_event
from attnrec.manifest import OOV

__all__ = ["BufferEntry", "format_entry", "encode_entry", "decode_entry", "split_entry", "entry_item", "MAX_DLQ_RAW", "TIMING_HEADER", "timing_header", "RawRecord", "Parsed", "parse_records", "EntryTable", "ModelInputs", "build_inputs", "StepInputs", "build_step_inputs", "Rows", "merge_scored", "recommend", "Recommendation"]


# --- the buffer-entry format (Redis ``{u:<id>}:recent`` lists hold these strings) ---------------
@dataclass(frozen=True, slots=True)
class BufferEntry:
    item_id: str
    event_type: str
    ts: int


def format_entry(ts: int, event_type: str, item_id: str) -> str:
    """A buffer entry ``"<ts>|<event_type>|<item_id>"``. The item id goes last: it may contain
    ``|``, and ``split(maxsplit=2)`` keeps it whole."""
    return f"{ts}|{event_type}|{item_id}"


def encode_entry(ev: ClickEvent) -> str:
    """The buffer entry of an event."""
    return format_entry(ev.ts, ev.event_type, ev.item_id)


def decode_entry(raw: str | bytes) -> BufferEntry:
    s = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    ts, et, item = s.split("|", 2)
    return BufferEntry(item, et, int(ts))


def split_entry(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """``(ts, event_type, item_id)`` of a raw entry, still bytes (the hot path's parse).
    Raises ValueError on a malformed entry."""
    ts, et, item = raw.split(b"|", 2)
    return ts, et, item


def entry_item(raw: bytes) -> str:
    """The item id of a raw entry, without building a :class:`BufferEntry`."""
    return split_entry(raw)[2].decode("utf-8")



# --- records in, decisions out -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as the agent received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0  # the record's Kafka timestamp (the broker's append time on a LogAppendTime topic)
    received_ms: float = 0.0  # when the worker took it from the consumer (epoch ms)
    epoch: int | None = 0  # exactly-once: its partition's assignment epoch then (stream.transactions)


@dataclass
class Parsed:
    events: list[tuple[ClickEvent, str, int]] = field(default_factory=list)  # (event, wm field, offset)
    dead: list[tuple[bytes | None, bytes, str]] = field(default_factory=list)  # (key, envelope, reason)
    dead_sources: list[int] = field(default_factory=list)  # per dead letter: its index in the batch's records
    unknown_types: int = 0
    sources: list[int] = field(default_factory=list)  # per event: its index in the batch's records


def dlq_reason(error: str) -> str:
    """A short, low-cardinality reason label for metrics."""
    e = error.removeprefix("invalid event: ")
    for prefix, label in (
        ("not JSON", "not_json"),
        ("missing field", "missing_field"),
        ("message of", "oversize"),
        ("empty message", "empty"),
        ("field 'context' larger", "oversize"),
        ("longer than", "oversize"),
        ("poison", "poison"),
    ):
        if e.startswith(prefix) or prefix in e:
            return label
    return "invalid_field"


#: Most original bytes a dead letter carries: base64 (4/3) of this plus the envelope stays
#: well under the default 1 MB producer request / broker message limits.
MAX_DLQ_RAW = 256 * 1024


def parse_records(records: Sequence[RawRecord], now_ms: int | None = None) -> Parsed:
    """Validate a batch in order; invalid records become dead-letter envelopes."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    out = Parsed()
    for i, r in enumerate(records):
        try:
            ev = parse_event(r.value)
        except InvalidEventError as exc:
            msg = str(exc)
            raw = r.value
            if raw is not None and len(raw) > MAX_DLQ_RAW:
                # base64 of the whole message would not fit in a dead letter (the producer's
                # 1 MB request limit): a permanent produce error the worker would retry forever
                msg += f" (raw holds the first {MAX_DLQ_RAW} of {len(raw)} bytes)"
                raw = raw[:MAX_DLQ_RAW]
            env = dlq_envelope(msg, raw, r.key, r.topic, r.partition, r.offset, now)
            out.dead.append((r.key, env, dlq_reason(msg)))
            out.dead_sources.append(i)
            continue
        if ev.unknown_type:
            out.unknown_types += 1
        out.events.append((ev, f"{r.topic}:{r.partition}", r.offset))
        out.sources.append(i)
    return out


TIMING_HEADER = "attnrec-timing"


def timing_header(record: RawRecord, batch_ms: Sequence[float], sent_ms: float) -> bytes:
    """The ``attnrec-timing`` header of a recommendation: its trigger's milestones in epoch ms,
    comma-separated: broker append (the clicks record's timestamp), received by the worker,
    batch start, Redis done, model done, sent to the producer."""
    return (f"{record.timestamp_ms},{record.received_ms:.3f},{batch_ms[0]:.3f},{batch_ms[1]:.3f},{batch_ms[2]:.3f},"
            f"{sent_ms:.3f}").encode()


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
    """Rows for the step graph: each user's new raw entry and its :class:`attnrec.stream.cache.UserCache`
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


@dataclass
class Rows:
    """The scored rows of a batch, whichever graph scored them: what :func:`recommend` reads."""

    users: list[str]
    windows: list[Sequence[bytes]]


def merge_scored(parts: Sequence[tuple[Any, tuple[np.ndarray, ...]]]) -> tuple[Rows, tuple[np.ndarray, ...]]:
    """One set of rows and (top_items, top_scores, attn) from several graphs' (inputs, outputs);
    attention rows of different widths are left-padded with zeros (positions beyond a window)."""
    parts = [(i, o) for i, o in parts if i is not None and i.users]
    width = max((o[2].shape[1] for _, o in parts), default=1)
    rows = Rows([u for i, _ in parts for u in i.users], [w for i, _ in parts for w in i.windows])
    if not parts:
        return rows, (np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32))
    attn = [np.pad(o[2], ((0, 0), (width - o[2].shape[1], 0))) for _, o in parts]
    return rows, (np.concatenate([o[0] for _, o in parts]), np.concatenate([o[1] for _, o in parts]),
                  np.concatenate(attn))


@dataclass
class Recommendation:
    user_id: str
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload)


def _because(window: Sequence[bytes], L: int, attn_row: list[float], order: list[int], k: int) -> list[dict[str, Any]]:
    """The top-``k`` past events by attention. ``window`` holds the row's raw entries newest
    first (position L-1 is ``window[0]``); ``attn_row`` the weights rounded to 4 places;
    ``order`` ranks the row's positions by weight; padding positions carry zero weight and are
    skipped."""
    out: list[dict[str, Any]] = []
    n = len(window)
    for p in order:
        if len(out) >= k:
            break
        j = L - 1 - p  # position -> newest-first index in the window
        w = attn_row[p]
        if j < n and w > 0:
            _, et, item = split_entry(window[j])
            out.append({"item_id": item.decode(), "event_type": et.decode(), "weight": w})
    return out


def recommend(
    model: LoadedModel | None,
    users: Sequence[str],
    raw: Mapping[str, Sequence[bytes]],
    triggers: dict[str, ClickEvent],
    *,
    top_k: int = 10,
    because_k: int = 3,
    exclude_seen: bool = True,
    popularity: Sequence[str] = (),
    now_ms: int | None = None,
    outputs: tuple[np.ndarray, ...] | None = None,
    inputs: ModelInputs | Rows | None = None,
) -> list[Recommendation]:
    """One recommendation per user. ``outputs`` are the model's (top_items, top_scores, attn)
    for the rows of ``inputs``; users without a row get the popularity fallback."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    version = model.version if model is not None else None
    pop = list(model.popularity) if model is not None and model.popularity else list(popularity)
    row_of = {u: r for r, u in enumerate(inputs.users)} if inputs is not None else {}
    if outputs is not None and inputs is not None and inputs.users:
        # one conversion per batch, not per element: numpy scalars and round() are slow in
        # Python loops; PAD/OOV and -inf (excluded) candidates are dropped here, in numpy
        top, scores = outputs[0], outputs[1].astype(np.float64)
        ok = (top > OOV) & np.isfinite(scores)
        top_l, scores_l = top.tolist(), np.round(np.where(ok, scores, 0.0), 4).tolist()
        ok_rows = ok.all(axis=1).tolist()
        ok_l = ok.tolist()
        attn_l = np.round(outputs[2].astype(np.float64), 4).tolist()
        order_l = np.argsort(-outputs[2], axis=1, kind="stable")[:, : max(because_k, 1) + 8].tolist()
        L = outputs[2].shape[1]
    ids = model.item_ids if model is not None else []
    recs: list[Recommendation] = []
    for u in users:
        trig = triggers[u]
        r = row_of.get(u)
        if model is not None and outputs is not None and inputs is not None and r is not None:
            pairs = zip(top_l[r], scores_l[r], strict=True)
            if not ok_rows[r]:
                pairs = ((i, sc) for (i, sc), k in zip(pairs, ok_l[r], strict=True) if k)
            items = [{"item_id": ids[i], "score": sc} for i, sc in pairs][:top_k]
            because = _because(inputs.windows[r], L, attn_l[r], order_l[r], because_k)
            fallback = False
        else:
            seen_u = {entry_item(e) for e in raw.get(u) or ()} if exclude_seen else set()
            items = [{"item_id": it, "score": 0.0} for it in pop if it not in seen_u][:top_k]
            because = []
            fallback = True
        recs.append(
            Recommendation(
                u,
                {
                    "user_id": u,
                    "items": items,
                    "model_version": version,
                    "fallback": fallback,
                    "trigger_event_id": trig.event_id,
                    "event_ts": trig.ts,
                    "emitted_ts": now,
                    "because": because,
                },
            )
        )
    return recs

