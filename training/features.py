"""Model input features, computed the same way offline (training) and online (the worker).

Torch-free and numpy-free. The vocabularies and gap buckets are the model contract of
:mod:`attnrec.manifest`, which the worker reads too; this module encodes training data with
them:

- items: index 0 = PAD, 1 = OOV (an item the model has never seen), real items 2..n_items-1.
- event types: index 0 = PAD, ``EVENT_TYPES.index(t) + 1`` otherwise (unknown types -> ``other``).
- time gaps: index 0 = PAD / unknown (the first event, or no timestamps), then log2-scale
  buckets of the gap in seconds between an event and the one before it:
  bucket ``1 + min(floor(log2(1 + gap_s)), N_GAP_BUCKETS - 2)``.

Sequences are LEFT-padded to a fixed length with PAD, so the newest event is always the last
position.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from attnrec.events import EVENT_TYPES
from attnrec.manifest import N_GAP_BUCKETS, OOV, PAD, gap_boundaries_ms

__all__ = [
    "PAD",
    "OOV",
    "N_EVENT_TYPES",
    "N_GAP_BUCKETS",
    "type_index",
    "gap_bucket",
    "gap_boundaries_ms",
    "gap_buckets",
    "left_pad",
    "encode_events",
]

#: Size of the event-type vocabulary including PAD.
N_EVENT_TYPES = len(EVENT_TYPES) + 1

_TYPE_INDEX = {t: i + 1 for i, t in enumerate(EVENT_TYPES)}
_OTHER = _TYPE_INDEX["other"]


def type_index(event_type: str) -> int:
    """Model index of an event type; unknown types map to ``other``."""
    return _TYPE_INDEX.get(event_type, _OTHER)


def gap_bucket(gap_ms: int | float | None) -> int:
    """Log-scale bucket of the gap (milliseconds) since the previous event; 0 when unknown."""
    if gap_ms is None or gap_ms != gap_ms or gap_ms < 0:  # None, NaN, clock skew
        return 0
    b = int(math.log2(1.0 + gap_ms / 1000.0))
    return 1 + min(b, N_GAP_BUCKETS - 2)


def gap_buckets(ts_ms: Sequence[int] | None, n: int) -> list[int]:
    """Gap buckets for a time-ordered list of timestamps (first event -> 0). No timestamps -> zeros."""
    if ts_ms is None:
        return [0] * n
    out = [0] * len(ts_ms)
    for i in range(1, len(ts_ms)):
        out[i] = gap_bucket(ts_ms[i] - ts_ms[i - 1])
    return out


def left_pad(xs: Sequence[int], length: int, pad: int = PAD) -> list[int]:
    """The last ``length`` values of ``xs``, left-padded with ``pad``."""
    xs = list(xs[-length:]) if length > 0 else []
    return [pad] * (length - len(xs)) + xs


def encode_events(
    item_ids: Sequence[str],
    event_types: Sequence[str],
    ts_ms: Sequence[int] | None,
    item_index: dict[str, int],
    length: int,
) -> tuple[list[int], list[int], list[int]]:
    """Oldest-first events -> (items, types, gaps), each left-padded to ``length``.

    ``item_index`` maps item_id -> model index (2..); unknown items become OOV. The gap of the
    oldest event kept is computed from the event before it when that event is given, so pass
    one more event than ``length`` if you have it.
    """
    items = [item_index.get(i, OOV) for i in item_ids]
    types = [type_index(t) for t in event_types]
    gaps = gap_buckets(ts_ms, len(items))
    return left_pad(items, length), left_pad(types, length), left_pad(gaps, length)
