#!/usr/bin/env python3
"""A consumer of attnrec's recommendations (the `recs` topic), with kafka-python alone.

    pip install kafka-python
    python docs/examples/consumer.py --bootstrap localhost:9092 --topic recs --group my-service

It reads with isolation.level=read_committed (so each trigger's recommendation is seen once:
aborted attempts of the worker's transactions are never delivered), in a consumer group (so
several copies split the partitions and a restart goes on from the committed offsets), and
still dedupes by trigger_event_id, as every consumer should (a worker running at-least-once
may repeat a recommendation after a crash). It prints one line per recommendation:

    <user>  <item> <item> …  because: <item> (<event type> <weight>), …  [trigger <event id>]

`--max-messages N` stops after N recommendations, `--timeout S` after S seconds without one
(both unset: runs until Ctrl-C). The value's contract is docs/schemas/recs.v1.json; each record
carries the header `attnrec-schema: recs/1`. Self-contained: copy it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import OrderedDict

from kafka import KafkaConsumer

#: The schema majors this consumer understands (the `attnrec-schema` header: `recs/<major>`).
KNOWN_MAJORS = {"1"}


class Seen:
    """The last `size` trigger event ids: a bounded memory for deduplication."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self.ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True when `key` is new (and remembers it)."""
        if key in self.ids:
            self.ids.move_to_end(key)
            return False
        self.ids[key] = None
        if len(self.ids) > self.size:
            self.ids.popitem(last=False)
        return True


def line(rec: dict) -> str:
    items = " ".join(it["item_id"] for it in rec["items"]) or "(none)"
    if rec["fallback"]:
        why = "not personalised (fallback)"
    else:
        why = "because: " + ", ".join(f"{b['item_id']} ({b['event_type']} {b['weight']:.2f})" for b in rec["because"])
    return f"{rec['user_id']}  {items}  {why}  [trigger {rec['trigger_event_id']}]"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="print attnrec recommendations from the recs topic")
    ap.add_argument("--bootstrap", default="localhost:9092", help="Kafka bootstrap servers (default localhost:9092)")
    ap.add_argument("--topic", default="recs", help="the recommendations topic (default recs)")
    ap.add_argument("--group", default="attnrec-example-consumer", help="consumer group id")
    ap.add_argument("--from-beginning", action="store_true",
                    help="a new group starts at the oldest record (default: only new recommendations)")
    ap.add_argument("--max-messages", type=int, default=0, help="stop after this many recommendations (0: no limit)")
    ap.add_argument("--timeout", type=float, default=0.0, help="stop after this many seconds without one (0: never)")
    args = ap.parse_args(argv)

    consumer = KafkaConsumer(
        args.topic,
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        isolation_level="read_committed",  # never see the aborted attempts of the worker's transactions
        auto_offset_reset="earliest" if args.from_beginning else "latest",
        enable_auto_commit=True,
        key_deserializer=lambda b: b.decode("utf-8") if b is not None else None,
    )
    seen = Seen()
    shown = dupes = 0
    last = time.monotonic()
    try:
        while not args.max_messages or shown < args.max_messages:
            # never more records than still wanted: every record a poll returns is handled, so the
            # offsets auto-commit commits are exactly those of what was handled
            batch = consumer.poll(timeout_ms=500, max_records=(args.max_messages - shown) if args.max_messages else None)
            if not batch:
                if args.timeout and time.monotonic() - last > args.timeout:
                    break
                continue
            last = time.monotonic()
            for records in batch.values():  # in order within each partition: per user
                for r in records:
                    schema = dict(r.headers or ()).get("attnrec-schema", b"recs/1").decode()
                    if schema.rpartition("/")[2] not in KNOWN_MAJORS:
                        print(f"skipping a record of schema {schema} (this consumer reads recs/1)", file=sys.stderr)
                        continue
                    rec = json.loads(r.value)
                    if not seen.add(rec["trigger_event_id"]):
                        dupes += 1
                        continue
                    print(line(rec), flush=True)
                    shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()  # commits the offsets of what was read (auto-commit)
    print(f"{shown} recommendations, {dupes} duplicates skipped", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
