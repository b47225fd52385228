"""What a Kafka transaction costs by itself: one record per transaction (the shape of exactly-once
output at a low rate, where every batch is one event), from the producer's send to a
``read_committed`` consumer's receipt, against an idempotent at-least-once send of the same record.
No worker, no faust: the protocol's floor on this box, for each client.

    .venv/bin/python docs/bench/txn_floor.py [--bootstrap 127.0.0.1:9092] [--rounds 3] [--records 300] [--gap-ms 30] [--only WORDS]

Run it against a running broker (``attnrec stack up``) on a quiet box. Each round runs the three
clients one after the other, each on fresh 8-partition topics:

- ``librdkafka at-least-once``: confluent-kafka, idempotent, ``acks=all``, ``linger.ms=0``, one
  record then ``flush()``;
- ``librdkafka exactly-once``: confluent-kafka, ``begin_transaction``, the record,
  ``send_offsets_to_transaction`` (one offset, a real group member's metadata), ``commit_transaction``;
- ``attnrec exactly-once``: the worker's transactional producer (aiokafka with KIP-447's offset
  commit, :mod:`attnrec.stream.core.kip447`), the same four steps (the group has no member, so
  the coordinator checks no generation);
- ``transaction protocol v2``: the same transaction in Kafka 4's protocol (KIP-890 part 2,
  ``transaction.version=2``, which a broker formatted by Kafka 4 has finalized), as raw requests
  on aiokafka's client, since neither aiokafka nor librdkafka speaks it: Produce v12 and
  TxnOffsetCommit v5 sent together (each broker adds its partition to the transaction itself: no
  AddPartitionsToTxn or AddOffsetsToTxn round trip), then EndTxn v5, which bumps the producer's
  epoch and returns it. The floor a worker on v2 would start from; not a producer (no retries
  beyond a busy coordinator, one broker).

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


def _tv2_requests():  # type: ignore[no-untyped-def]
    """Produce v12, TxnOffsetCommit v5 and EndTxn v5 (flexible versions), built on aiokafka's
    protocol types; TxnOffsetCommit v5 has v3's fields (:mod:`attnrec.stream.core.kip447`)."""
    from aiokafka.protocol.api import Request, RequestStruct, Response
    from aiokafka.protocol.types import (
        Boolean,
        CompactArray,
        CompactBytes,
        CompactString,
        Int16,
        Int32,
        Int64,
        Schema,
        TaggedFields,
    )
    from attnrec.stream.core.kip447 import (
        TxnOffsetCommitRequest_v3,
        TxnOffsetCommitRequestV3,
        TxnOffsetCommitResponse_v3,
    )

    class ProduceResponse_v12(Response):
        API_KEY, API_VERSION = 0, 12
        SCHEMA = Schema(
            ("responses", CompactArray(
                ("name", CompactString("utf-8")),
                ("partitions", CompactArray(
                    ("index", Int32), ("error_code", Int16), ("base_offset", Int64), ("log_append_time_ms", Int64),
                    ("log_start_offset", Int64),
                    ("record_errors", CompactArray(("batch_index", Int32), ("message", CompactString("utf-8")),
                                                   ("tags", TaggedFields))),
                    ("error_message", CompactString("utf-8")), ("tags", TaggedFields))),
                ("tags", TaggedFields))),
            ("throttle_time_ms", Int32), ("tags", TaggedFields))  # fmt: skip

    class ProduceRequest_v12(RequestStruct):
        FLEXIBLE_VERSION, API_KEY, API_VERSION, RESPONSE_TYPE = True, 0, 12, ProduceResponse_v12
        SCHEMA = Schema(
            ("transactional_id", CompactString("utf-8")), ("acks", Int16), ("timeout_ms", Int32),
            ("topic_data", CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_data", CompactArray(("index", Int32), ("records", CompactBytes), ("tags", TaggedFields))),
                ("tags", TaggedFields))),
            ("tags", TaggedFields))  # fmt: skip

    class TxnOffsetCommitResponse_v5(TxnOffsetCommitResponse_v3):
        API_VERSION = 5

    class TxnOffsetCommitRequest_v5(TxnOffsetCommitRequest_v3):
        API_VERSION, RESPONSE_TYPE = 5, TxnOffsetCommitResponse_v5

    class EndTxnResponse_v5(Response):
        API_KEY, API_VERSION = 26, 5
        SCHEMA = Schema(("throttle_time_ms", Int32), ("error_code", Int16), ("producer_id", Int64),
                        ("producer_epoch", Int16), ("tags", TaggedFields))  # fmt: skip

    class EndTxnRequest_v5(RequestStruct):
        FLEXIBLE_VERSION, API_KEY, API_VERSION, RESPONSE_TYPE = True, 26, 5, EndTxnResponse_v5
        SCHEMA = Schema(("transactional_id", CompactString("utf-8")), ("producer_id", Int64),
                        ("producer_epoch", Int16), ("committed", Boolean), ("tags", TaggedFields))  # fmt: skip

    class Produce(Request[ProduceRequest_v12]):
        API_KEY = 0

        def __init__(self, *args) -> None:  # type: ignore[no-untyped-def]
            self.args = args  # transactional id, topic, partition, record batch

        def build(self, cls):  # type: ignore[no-untyped-def]
            tid, topic, partition, batch = self.args
            return cls(tid, -1, 30000, [(topic, [(partition, batch, {})], {})], {})

    class TxnOffsetCommit(Request[TxnOffsetCommitRequest_v5]):
        """kip447's v3 request at v5 (the same fields)."""

        API_KEY = 28
        __init__ = TxnOffsetCommitRequestV3.__init__
        build = TxnOffsetCommitRequestV3.build

    class EndTxn(Request[EndTxnRequest_v5]):
        API_KEY = 26

        def __init__(self, *args) -> None:  # type: ignore[no-untyped-def]
            self.args = args  # transactional id, producer id, epoch

        def build(self, cls):  # type: ignore[no-untyped-def]
            return cls(*self.args, True, {})

    return Produce, TxnOffsetCommit, EndTxn


def transaction_v2(bootstrap: str, n: int, gap_s: float) -> tuple[dict[int, float], dict[int, float]]:
    from aiokafka import TopicPartition
    from aiokafka.client import AIOKafkaClient, CoordinationType
    from aiokafka.protocol.transaction import InitProducerIdRequest
    from aiokafka.record.default_records import DefaultRecordBatchBuilder
    from attnrec.stream.core.kip447 import GroupMetadata

    Produce, TxnOffsetCommit, EndTxn = _tv2_requests()
    out, src = _topics(bootstrap)
    reader = _Reader(bootstrap, out)
    busy = (14, 51)  # COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS: ask again

    def batch(pid: int, epoch: int, i: int) -> bytes:
        b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=1, producer_id=pid,
                                      producer_epoch=epoch, base_sequence=0, batch_size=1 << 16)  # fmt: skip
        b.append(0, timestamp=None, key=str(i).encode(), value=str(i).encode(), headers=[])
        return bytes(b.build())

    async def run() -> dict[int, float]:
        client = AIOKafkaClient(bootstrap_servers=bootstrap)
        await client.bootstrap()
        tid, group = f"floor-{uuid.uuid4().hex[:8]}", GroupMetadata(f"floor-a-{uuid.uuid4().hex[:8]}")
        node = await client.coordinator_lookup(CoordinationType.TRANSACTION, tid)
        gnode = await client.coordinator_lookup(CoordinationType.GROUP, group.group_id)
        await client.force_metadata_update()
        while (r := await client.send(node, InitProducerIdRequest(tid, 60000))).error_code in busy:
            await asyncio.sleep(0.2)
        if r.error_code:
            raise RuntimeError(f"InitProducerId: error {r.error_code}")
        pid, epoch = r.producer_id, r.producer_epoch
        sent: dict[int, float] = {}
        for i in range(n):
            t0 = time.perf_counter()
            sent[i] = t0
            part = i % PARTITIONS
            leader = client.cluster.leader_for_partition(TopicPartition(out, part))
            pr, orr = await asyncio.gather(client.send(leader, Produce(tid, out, part, batch(pid, epoch, i))),
                                           client.send(gnode, TxnOffsetCommit(tid, pid, epoch, group, [(src, [(part, i + 1, "")])])))  # fmt: skip
            while (code := pr.responses[0][1][0][1]) in busy:  # a leader's add met the previous commit's markers
                pr = await client.send(leader, Produce(tid, out, part, batch(pid, epoch, i)))
            while (ocode := orr.topics[0][1][0][1]) in busy:
                orr = await client.send(gnode, TxnOffsetCommit(tid, pid, epoch, group, [(src, [(part, i + 1, "")])]))
            if code or ocode:
                raise RuntimeError(f"transaction {i}: Produce error {code}, TxnOffsetCommit error {ocode}")
            while (e := await client.send(node, EndTxn(tid, pid, epoch))).error_code in busy:
                await asyncio.sleep(0.001)
            if e.error_code:
                raise RuntimeError(f"EndTxn: error {e.error_code}")
            pid, epoch = e.producer_id, e.producer_epoch  # v2: every transaction ends with a new epoch
            await asyncio.sleep(max(0.0, gap_s - (time.perf_counter() - t0)))
        await client.close()
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
    ap.add_argument("--only", default="", help="the clients whose name holds one of these comma-separated words")
    a = ap.parse_args()
    gap = a.gap_ms / 1000
    clients: dict[str, Callable[[], tuple[dict[int, float], dict[int, float]]]] = {
        "librdkafka at-least-once": lambda: librdkafka(a.bootstrap, a.records, gap, False),
        "librdkafka exactly-once": lambda: librdkafka(a.bootstrap, a.records, gap, True),
        "attnrec exactly-once": lambda: attnrec_producer(a.bootstrap, a.records, gap),
        "transaction protocol v2": lambda: transaction_v2(a.bootstrap, a.records, gap),
    }
    if a.only:
        clients = {k: v for k, v in clients.items() if any(w in k for w in a.only.split(","))}
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
