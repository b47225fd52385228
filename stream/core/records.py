"""Kafka records in, events and dead letters out: the first step of every batch (pure, no I/O)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from attnrec.errors import InvalidEventError
from attnrec.events import ClickEvent, dlq_envelope, parse_event

__all__ = ["RawRecord", "Parsed", "parse_records", "dlq_reason", "MAX_DLQ_RAW"]


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
