"""The dashboard's figures from what the collector read, as plain functions (no Kafka, no
threads): a recommendation as a feed row with its explanation in words, a dead letter as a row,
one chart point with its rates, percentiles, and the partitions a group member owns.
:mod:`attnrec.apps.dashboard.collector` keeps the state and calls these.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import orjson

__all__ = ["explain", "percentile", "feed_row", "dead_letter_row", "chart_point", "assignment_topics"]

_VERBS = {
    "view": "viewed",
    "click": "clicked",
    "like": "liked",
    "cart": "added to cart",
    "purchase": "bought",
    "gift": "gifted",
    "share": "shared",
}


def explain(because: list[dict[str, Any]]) -> list[str]:
    """``[{"item_id": "X", "event_type": "purchase", "weight": 0.41}]`` -> ``["because you bought X — weight 0.41"]``."""
    out = []
    for b in because:
        verb = _VERBS.get(str(b.get("event_type")), "interacted with")
        w = b.get("weight")
        wt = f" — weight {float(w):.2f}" if isinstance(w, (int, float)) else ""
        out.append(f"because you {verb} {b.get('item_id')}{wt}")
    return out


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def feed_row(rec: dict[str, Any], m: Any, latency: float | None) -> dict[str, Any]:
    """A recommendation (its record ``m``, its JSON ``rec``) as a row of the live feed."""
    because = rec.get("because") or []
    return {
        "user_id": rec.get("user_id"),
        "items": [it.get("item_id") for it in (rec.get("items") or [])[:5]],
        "scores": [it.get("score") for it in (rec.get("items") or [])[:5]],
        "because": because,
        "explanations": explain(because),
        "model_version": rec.get("model_version"),
        "fallback": bool(rec.get("fallback")),
        "trigger_event_id": rec.get("trigger_event_id"),
        "emitted_ts": rec.get("emitted_ts"),
        "kafka_ts": m.timestamp,
        "partition": m.partition,
        "offset": m.offset,
        "latency_ms": latency,
    }


def dead_letter_row(m: Any) -> dict[str, Any]:
    """A dead-letter record as a row of the page's list (the envelope's reason, where it came from)."""
    try:
        env = orjson.loads(m.value)
    except Exception:
        env = {"error": "(dead letter is not JSON)"}
    return {
        "error": str(env.get("error"))[:500],
        "topic": env.get("topic"), "partition": env.get("partition"), "offset": env.get("offset"),
        "ts": env.get("ts") or m.timestamp,
        "key": m.key.decode("utf-8", "replace") if m.key else None,
    }  # fmt: skip


def chart_point(prev: deque[dict[str, Any]], wall: float, clicks: int, recs: int, dead: int, lag: int,
                lats: list[float], window_s: float) -> dict[str, Any]:
    """The chart's point at ``wall`` from the topics' totals, the lag and the window's sorted
    latencies ``lats``: rates are differences over the last ~5 s of points ``prev``, dead
    letters per minute over the window."""
    ref = None
    for smp in reversed(prev):  # the newest point at least 5 s old, else the oldest
        ref = smp
        if wall - smp["t"] >= 5.0:
            break
    dt = (wall - ref["t"]) if ref else 0.0
    ev_rate = (clicks - ref["events_total"]) / dt if ref and dt > 0 else 0.0
    rec_rate = (recs - ref["recs_total"]) / dt if ref and dt > 0 else 0.0
    old = None  # dead letters over the last minute: total now minus total a window ago
    for smp in prev:
        if smp["t"] >= wall - window_s:
            old = smp
            break
    dead_min = (dead - old["dead_total"]) * 60.0 / max(window_s, 1.0) if old else 0.0
    return {
        "t": wall, "events_total": clicks, "recs_total": recs, "dead_total": dead, "lag": lag,
        "events_per_s": max(0.0, ev_rate), "recs_per_s": max(0.0, rec_rate),
        "p50": percentile(lats, 50), "p99": percentile(lats, 99), "latency_n": len(lats),
        "dead_per_min": max(0.0, dead_min),
    }  # fmt: skip


def assignment_topics(asg: Any) -> list[tuple[str, list[int]]]:
    """(topic, partitions) pairs from a decoded ConsumerProtocolAssignment, whatever its shape."""
    if asg is None or isinstance(asg, (bytes, bytearray)):
        return []
    if isinstance(asg, dict):
        parts = asg.get("assigned_partitions") or asg.get("partitions") or []
    else:
        parts = getattr(asg, "assigned_partitions", None) or getattr(asg, "partitions", None) or []
        if callable(getattr(asg, "to_dict", None)) and not parts:
            return assignment_topics(asg.to_dict())
    out: list[tuple[str, list[int]]] = []
    for t in parts:
        if isinstance(t, dict):
            out.append((str(t.get("topic")), [int(p) for p in t.get("partitions") or []]))
        elif isinstance(t, (tuple, list)) and len(t) == 2:
            out.append((str(t[0]), [int(p) for p in t[1]]))
        else:
            out.append((str(getattr(t, "topic", None)), [int(p) for p in getattr(t, "partitions", []) or []]))
    return out
