"""The worker's pure logic: bytes in, decisions out. No Kafka, no Redis, no faust.

The agent (``stream/app.py``) only moves bytes between Kafka, Redis and onnxruntime; every
decision — what is valid, what goes to the dead-letter topic, how a buffer becomes model
input, what a recommendation says — is made here and unit-tested without services.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from attnrec.errors import InvalidEventError
from stream.buffer import BufferEntry
from stream.model import OOV, LoadedModel
from stream.schema import ClickEvent, dlq_envelope, parse_event

__all__ = ["MAX_DLQ_RAW", "RawRecord", "Parsed", "parse_records", "ModelInputs", "build_inputs", "recommend", "Recommendation"]


@dataclass(frozen=True, slots=True)
class RawRecord:
    """A Kafka record as the agent received it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0


@dataclass
class Parsed:
    events: list[tuple[ClickEvent, str, int]] = field(default_factory=list)  # (event, wm field, offset)
    dead: list[tuple[bytes | None, bytes, str]] = field(default_factory=list)  # (key, envelope, reason)
    unknown_types: int = 0


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
    for r in records:
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
            continue
        if ev.unknown_type:
            out.unknown_types += 1
        out.events.append((ev, f"{r.topic}:{r.partition}", r.offset))
    return out


@dataclass
class ModelInputs:
    items: np.ndarray  # (B, L) int64, left-padded, newest at L-1
    types: np.ndarray  # (B, L) int64
    gaps: np.ndarray  # (B, L) int64
    exclude: np.ndarray  # (B, E) int64
    used: list[list[BufferEntry]]  # per row: the entries at positions L-n..L-1, oldest first
    users: list[str]  # row -> user


def build_inputs(
    model: LoadedModel,
    buffers: dict[str, list[BufferEntry]],
    users: Sequence[str],
    *,
    exclude_seen: bool = True,
    seen: dict[str, list[str]] | None = None,
    exclude_window: int | None = None,
) -> ModelInputs:
    """Turn newest-first buffers into left-padded index arrays for the users that have a
    usable history (at least one item the model knows)."""
    rows: list[tuple[str, list[BufferEntry], list[int]]] = []
    for u in users:
        buf = buffers.get(u) or []
        window = buf[: model.max_len][::-1]  # oldest -> newest
        idx = [model.item_index.get(e.item_id, OOV) for e in window]
        if not any(i > OOV for i in idx):
            continue  # no usable history: fallback
        rows.append((u, window, idx))
    B = len(rows)
    L = max((len(w) for _, w, _ in rows), default=1)
    items = np.zeros((B, L), dtype=np.int64)
    types = np.zeros((B, L), dtype=np.int64)
    gaps = np.zeros((B, L), dtype=np.int64)
    ex_lists: list[list[int]] = []
    for r, (u, window, idx) in enumerate(rows):
        n = len(window)
        items[r, L - n :] = idx
        if model.uses_types:
            types[r, L - n :] = [model.event_type_index.get(e.event_type, 1) for e in window]
        if model.uses_gaps and n:
            # the oldest kept event's gap comes from the event before it, when the buffer has it
            older = buffers[u][model.max_len : model.max_len + 1]
            ts = np.fromiter((e.ts for e in window[::-1] + older), dtype=np.int64)[::-1]  # (n or n+1,) oldest first
            d = np.diff(ts)
            b = np.searchsorted(model.gap_boundaries_ms, d, side="right") + 1
            b[d < 0] = 0  # clock skew: unknown gap
            gaps[r, L - n :] = b[-n:] if older else np.concatenate(([0], b))
        if exclude_seen:
            # the model window's items are already mapped (they are row r of `items`); only
            # older events inside the exclusion window need a vocabulary lookup
            ids = seen[u] if seen is not None and u in seen else [e.item_id for e in buffers[u]]
            older_ids = ids[n : exclude_window if exclude_window is not None else len(ids)]
            ex_lists.append([model.item_index.get(i, OOV) for i in older_ids])
        else:
            ex_lists.append([])
    E = max((len(x) for x in ex_lists), default=0)
    if exclude_seen:
        # (B, L + E): the window's items plus older seen items; PAD/OOV entries are harmless
        exclude = np.zeros((B, L + E), dtype=np.int64)
        exclude[:, :L] = items
        for r, x in enumerate(ex_lists):
            exclude[r, L : L + len(x)] = x
    else:
        exclude = np.zeros((B, 1), dtype=np.int64)
    return ModelInputs(items, types, gaps, exclude, [w for _, w, _ in rows], [u for u, _, _ in rows])


@dataclass
class Recommendation:
    user_id: str
    payload: dict[str, Any]

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload)


def _because(window: list[BufferEntry], attn_row: list[float], order: list[int], k: int) -> list[dict[str, Any]]:
    """The top-``k`` past events by attention. ``order`` ranks the row's positions by weight;
    padding positions carry zero weight and are skipped."""
    n, L = len(window), len(attn_row)
    out: list[dict[str, Any]] = []
    for p in order:
        if len(out) >= k:
            break
        i = p - (L - n)  # position -> index in the window (left padding before it)
        w = attn_row[p]
        if i >= 0 and w > 0:
            e = window[i]
            out.append({"item_id": e.item_id, "event_type": e.event_type, "weight": round(w, 4)})
    return out


def recommend(
    model: LoadedModel | None,
    users: Sequence[str],
    buffers: dict[str, list[BufferEntry]],
    triggers: dict[str, ClickEvent],
    *,
    top_k: int = 10,
    because_k: int = 3,
    exclude_seen: bool = True,
    popularity: Sequence[str] = (),
    now_ms: int | None = None,
    outputs: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    inputs: ModelInputs | None = None,
    seen: dict[str, list[str]] | None = None,
) -> list[Recommendation]:
    """One recommendation per user. ``outputs`` are the model's (top_items, top_scores, attn)
    for the rows of ``inputs``; users without a row get the popularity fallback."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    version = model.version if model is not None else None
    pop = list(model.popularity) if model is not None and model.popularity else list(popularity)
    row_of = {u: r for r, u in enumerate(inputs.users)} if inputs is not None else {}
    if outputs is not None and inputs is not None and inputs.users:
        # one conversion per batch, not per element: numpy scalars are slow in Python loops
        top_l, scores_l, attn_l = outputs[0].tolist(), outputs[1].tolist(), outputs[2].tolist()
        order_l = np.argsort(-outputs[2], axis=1, kind="stable")[:, : max(because_k, 1) + 8].tolist()
    recs: list[Recommendation] = []
    for u in users:
        trig = triggers[u]
        r = row_of.get(u)
        if model is not None and outputs is not None and inputs is not None and r is not None:
            ids = model.item_ids
            items = [
                {"item_id": ids[i], "score": round(sc, 4)}
                for i, sc in zip(top_l[r], scores_l[r], strict=True)
                if i > OOV and math.isfinite(sc)
            ][:top_k]
            because = _because(inputs.used[r], attn_l[r], order_l[r], because_k)
            fallback = False
        else:
            if not exclude_seen:
                seen_u: set[str] = set()
            elif seen is not None and u in seen:
                seen_u = set(seen[u])
            else:
                seen_u = {e.item_id for e in buffers.get(u, [])}
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

