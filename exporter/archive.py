"""The periodic trainer's first step: archive what is new on ``clicks`` into the event log.

A kafka-python consumer in the trainer's group (``--trainer-group``, default ``attnrec-trainer``)
reads what is new on ``clicks`` (until the topic is drained or ``MAX_ARCHIVE_EVENTS``),
validates each message with the shared schema (invalid ones are counted and skipped; the worker
dead-letters them), writes the valid events as one JSONL file under the event log
(``--events-dir``, default ``$ATTNREC_HOME/events``): temp file, fsync, rename, fsync the
directory -- and only then commits the consumer offsets. A crash between the two re-archives the
same events next time; the training loader drops duplicates by event_id, so nothing is lost or
counted twice.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from attnrec.errors import InvalidEventError, TransientError
from attnrec.registry import fsync_dir

from .settings import TrainerSettings

__all__ = ["write_event_file", "archive_from_kafka", "MAX_ARCHIVE_EVENTS"]

log = logging.getLogger(__name__)

#: Most events one archive pass reads.
MAX_ARCHIVE_EVENTS = 1_000_000


def write_event_file(events_dir: Path, lines: Iterable[bytes]) -> Path | None:
    """Durably write JSONL lines as a new event-log file; returns its path (None if no lines).

    Temp file -> fsync -> rename -> fsync dir: once this returns the file survives a crash,
    and a reader never sees a partial file (temp names do not end in .jsonl).
    """
    events_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
    final = events_dir / f"clicks-{stamp}.jsonl"
    tmp = events_dir / f".clicks-{stamp}.jsonl.tmp"
    n = 0
    with open(tmp, "wb") as f:
        for line in lines:
            f.write(line.rstrip(b"\n") + b"\n")
            n += 1
        f.flush()
        os.fsync(f.fileno())
    if n == 0:
        tmp.unlink()
        return None
    os.rename(tmp, final)
    fsync_dir(events_dir)
    return final


def archive_from_kafka(s: TrainerSettings, *, idle_s: float = 2.0, join_timeout_s: float = 60.0) -> dict[str, Any]:
    """Drain new ``clicks`` into the event log; commit offsets only after the file is durable."""
    import orjson
    from kafka import KafkaConsumer
    from kafka.errors import KafkaError

    from attnrec.events import parse_event
    from attnrec.kafka_util import kafka_python_security

    t0 = time.monotonic()
    try:
        consumer = KafkaConsumer(
            s.clicks_topic, bootstrap_servers=s.kafka_bootstrap.split(","), group_id=s.trainer_group,
            enable_auto_commit=False, auto_offset_reset="earliest", max_poll_records=5000,
            **kafka_python_security(s),
        )
    except KafkaError as exc:
        raise TransientError(f"cannot reach Kafka at {s.kafka_bootstrap}: {exc}") from None
    lines: list[bytes] = []
    invalid = 0
    try:
        idle_since: float | None = None  # set once partitions are assigned
        ends: dict[Any, int] | None = None  # the end offsets when they were: what this cycle archives
        while len(lines) < MAX_ARCHIVE_EVENTS:
            batch = consumer.poll(timeout_ms=500, max_records=5000)
            records = [r for part in batch.values() for r in part]
            if ends is None and consumer.assignment():
                ends = consumer.end_offsets(list(consumer.assignment()))
            if not records:
                # the first polls join the group; then the cycle ends at the end offsets it saw
                # (or, on a broker that answers slowly, after idle_s without a record)
                if ends is not None and all(consumer.position(tp) >= end for tp, end in ends.items()):
                    break
                if idle_since is None and consumer.assignment():
                    idle_since = time.monotonic()
                if idle_since is not None and time.monotonic() - idle_since >= max(idle_s, 30.0 if ends else idle_s):
                    break
                if idle_since is None and time.monotonic() - t0 > join_timeout_s:
                    raise TransientError(f"no partitions of {s.clicks_topic} assigned within {join_timeout_s:.0f}s")
                continue
            idle_since = time.monotonic()
            for rec in records:
                try:
                    ev = parse_event(rec.value)
                except InvalidEventError as exc:
                    invalid += 1
                    log.debug("skipping invalid message %s[%d]@%d: %s", rec.topic, rec.partition, rec.offset, exc)
                    continue
                lines.append(orjson.dumps(ev.to_dict()))
        path = write_event_file(s.event_log, lines)
        if lines or invalid:
            consumer.commit()  # only now: the events are on disk
    except KafkaError as exc:
        raise TransientError(f"archiving {s.clicks_topic} failed: {exc}") from None
    finally:
        consumer.close(autocommit=False)
    summary = {"archived": len(lines), "invalid": invalid, "file": str(path) if path else None,
               "seconds": round(time.monotonic() - t0, 2)}
    log.info("archived %d events (%d invalid skipped) from %s into %s", len(lines), invalid, s.clicks_topic,
             path or "nothing")
    return summary
