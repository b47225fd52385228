"""What a Kafka transaction costs by itself: one record per transaction (the shape of exactly-once
output at a low rate, where every batch is one event), from the producer's send to a
``read_committed`` consumer's receipt, against an idempotent at-least-once send of the same record.
No worker, no faust: the protocol's floor on this box, for each client.

    .venv/bin/python docs/bench/txn_floor.py [--bootstrap 127.0.0.1:9092] [--rounds 3] [--records 300] [--gap-ms 30]

Run it against a running broker (``attnrec stack up``) on a quiet box. Each round runs the three
clients one after the other, each on fresh 8-partition topics:

- ``librdkafka at-least-once``: confluent-kafka, idempotent, ``acks=all``, ``linger.ms=0``, one
  record then ``flush()``;
- ``librdkafka exactly-once``: confluent-kafka, ``begin_transaction``, the record,
  ``send_offsets_to_transaction`` (one offset, a real group member's metadata), ``commit_transaction``;
- ``attnrec exactly-once``: the worker's transactional producer (aiokafka with KIP-447's offset
  commit, :mod:`attnrec.stream.core.kip447`), the same four steps (the group has no member, so
  the coordinator checks no generation).

A record is read by a ``read_committed`` confluent-kafka consumer polling in a thread. Printed per
client: the median over rounds of each round's p50 and p90 (ms, the first 50 records of a round
left out), with the rounds' range.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import uuid
from collections.abc import Callable

PARTITIONS = 8


def _topics(bootstrap: str) -> tuple[str, str]:
    from confluent_kafka.admin import AdminClient, NewTopic

    out, src = f"floor-{uuid.uuid4().hex[:8]}", f"floor-src-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(out, PARTITIONS, 1), NewTopic(src, PARTITIONS, 1)])
    for f in futures.values():
        f.result()
    time.sleep(1.0)
    return out, src


class _Reader:
    """A read_committed consumer of ``topic`` in a thread: value (the record's number) -> receipt time."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.got: dict[int, float] = {}
        self._stop = False
        self._args = bootstrap, topic
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(3.0)  # joined and positioned

    def _run(self) -> None:
        from confluent_kafka import Consumer

        bootstrap, topic = self._args
        c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-r-{uuid.uuid4().hex[:8]}",
                      "isolation.level": "read_committed", "auto.offset.reset": "earliest",
                      "fetch.wait.max.ms": 500})  # fmt: skip
        c.subscribe([topic])
        while not self._stop:
            m = c.poll(0.1)
            if m is not None and not m.error():
                self.got[int(m.value())] = time.perf_counter()
        c.close()

    def stop(self) -> dict[int, float]:
        time.sleep(2.0)
        self._stop = True
        self._thread.join()
        return self.got


def _group_member(bootstrap: str, src: str):  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer

    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"floor-g-{uuid.uuid4().hex[:8]}",
                  "enable.auto.commit": False})  # fmt: skip
    c.subscribe([src])
    for _ in range(40):
        c.poll(0.25)
        if c.assignment():
            break
    return c


def _paced(n: int, gap_s: float, one: Callable[[int], None]) -> dict[int, float]:
    sent: dict[int, float] = {}
    for i in range(n):
        t0 = time.perf_counter()
        sent[i] = t0
        one(i)
        time.sleep(max(0.0, gap_s - (time.perf_counter() - t0)))
    return sent


def librdkafka(bootstrap: str, n: int, gap_s: float, transactional: bool) -> tuple[dict[int, float], dict[int, float]]:
    from confluent_kafka import Producer, TopicPartition

    out, src = _topics(bootstrap)
    member = _group_member(bootstrap, src)
    meta = member.consumer_group_metadata()
    conf = {"bootstrap.servers": bootstrap, "linger.ms": 0}
    if transactional:
        p = Producer({**conf, "transactional.id": f"floor-{uuid.uuid4().hex[:8]}"})
        p.init_transactions()
    else:
        p = Producer({**conf, "enable.idempotence": True, "acks": "all"})
    reader = _Reader(bootstrap, out)

    def one(i: int) -> None:
        if transactional:
            p.begin_transaction()
            p.produce(out, key=str(i), value=str(i))
            p.send_offsets_to_transaction([TopicPartition(src, i % PARTITIONS, i + 1)], meta)
            p.commit_transaction()
        else:
            p.produce(out, key=str(i), value=str(i))
            p.flush()

    sent = _paced(n, gap_s, one)
    got = reader.stop()
    member.close()
    return sent, got


def attnrec_producer(bootstrap: str, n: int, gap_s: float) -> tuple[dict[int, float], dict[int, float]]:
    from aiokafka import TopicPartition
    from attnrec.stream.core.kip447 import GroupMetadata, TransactionalProducer

    out, src = _topics(bootstrap)
    reader = _Reader(bootstrap, out)

    async def run() -> dict[int, float]:
        p = TransactionalProducer(bootstrap_servers=bootstrap, transactional_id=f"floor-{uuid.uuid4().hex[:8]}",
                                  enable_idempotence=True, acks="all", linger_ms=0, retry_backoff_ms=10)  # fmt: skip
        await p.start()
        group = GroupMetadata(f"floor-a-{uuid.uuid4().hex[:8]}")  # no member: the coordinator checks no generation
        sent: dict[int, float] = {}
        for i in range(n):
            t0 = time.perf_counter()
            sent[i] = t0
            await p.begin_transaction()
            await p.send(out, value=str(i).encode(), key=str(i).encode())
            await p.send_offsets_to_transaction({TopicPartition(src, i % PARTITIONS): i + 1}, group)
            await p.commit_transaction()
            await asyncio.sleep(max(0.0, gap_s - (time.perf_counter() - t0)))
        await p.stop()
        return sent

    sent = asyncio.run(run())
    return sent, reader.stop()


def _pcts(sent: dict[int, float], got: dict[int, float], skip: int = 50) -> tuple[float, float, int]:
    xs = sorted((got[i] - sent[i]) * 1000 for i in sent if i >= skip and i in got)
    return statistics.median(xs), xs[int(len(xs) * 0.9)], len(xs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=300)
    ap.add_argument("--gap-ms", type=float, default=30.0)
    a = ap.parse_args()
    gap = a.gap_ms / 1000
    clients: dict[str, Callable[[], tuple[dict[int, float], dict[int, float]]]] = {
        "librdkafka at-least-once": lambda: librdkafka(a.bootstrap, a.records, gap, False),
        "librdkafka exactly-once": lambda: librdkafka(a.bootstrap, a.records, gap, True),
        "attnrec exactly-once": lambda: attnrec_producer(a.bootstrap, a.records, gap),
    }
    res: dict[str, list[tuple[float, float, int]]] = {k: [] for k in clients}
    for r in range(a.rounds):
        for name, run in clients.items():
            with open("/proc/loadavg") as f:
                load = f.read().split()[0]
            p50, p90, got = _pcts(*run())
            res[name].append((p50, p90, got))
            print(f"round {r + 1} {name}: p50 {p50:.2f} p90 {p90:.2f} ms ({got} records, load {load})", flush=True)
    for name, rows in res.items():
        p50s, p90s = [x[0] for x in rows], [x[1] for x in rows]
        print(f"{name}: send -> read committed p50 {statistics.median(p50s):.2f} ({min(p50s):.2f}-{max(p50s):.2f}) ms, "
              f"p90 {statistics.median(p90s):.2f} ({min(p90s):.2f}-{max(p90s):.2f}) ms")  # fmt: skip


if __name__ == "__main__":
    main()
