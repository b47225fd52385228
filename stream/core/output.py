"""The worker's output to Kafka: the records of one batch (:class:`Outbox`), the plain producer
(:class:`KafkaSender`), and their delivery and commit (:class:`Output`).

faust's ``topic.send`` cost ~5x more CPU per record than a plain aiokafka producer here
(docs/BENCHMARKS.md), so recommendations and dead letters go through our own producer. A
batch's records are collected in an :class:`Outbox` with their delivery futures: at least once,
the batch's input offsets may be acknowledged only once every future has resolved; exactly
once, the records and the offsets commit together in the batch's transactions
(:mod:`attnrec.stream.core.transactions`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Protocol

import orjson

from attnrec.errors import TransientError
from attnrec.events import dlq_envelope
from attnrec.kafka_util import aiokafka_security
from attnrec.schemas import header as schema_header
from attnrec.settings import Settings

from .metrics import WorkerMetrics
from .recommend import Recommendation
from .records import Parsed, RawRecord, dlq_reason

__all__ = ["Headers", "SendFn", "Record", "Outbox", "KafkaSender", "Transactions", "Output", "RECS_SCHEMA", "DLQ_SCHEMA"]

log = logging.getLogger(__name__)
#: The ``attnrec-schema`` header of every record produced (``recs/1``, ``clicks.dlq/1``:
#: docs/schemas/README.md).
RECS_SCHEMA, DLQ_SCHEMA = schema_header("recs"), schema_header("clicks.dlq")

Headers = list[tuple[str, bytes]] | None
#: async (topic, key, value, headers, input partition) -> the broker's delivery future
SendFn = Callable[[str, "bytes | None", bytes, Headers, "int | None"], Awaitable["asyncio.Future[Any]"]]
#: One produced record: topic, key, value, headers, and the input partition and offset of the
#: event that triggered it (None for neither).
Record = tuple[str, "bytes | None", bytes, Headers, "int | None", "int | None"]


@dataclass
class Outbox:
    """The records one batch produced. At least once, each is sent at once and its delivery
    future kept; exactly once (``deferred``), they wait for the transaction that commits them
    with the batch's input offsets (:mod:`attnrec.stream.core.transactions`)."""

    deferred: bool = False
    records: list[Record] = dc_field(default_factory=list)
    futures: list[asyncio.Future[Any]] = dc_field(default_factory=list)
    enqueue_ms: float = 0.0
    event_ts: list[int] = dc_field(default_factory=list)
    #: exactly-once, per input partition of the batch: the offset after its last event, its
    #: first event's offset, the partition's assignment epoch when the events were received,
    #: and the partitions whose part of the batch is void (not produced, not committed: another
    #: worker redoes it)
    offsets: dict[int, int] = dc_field(default_factory=dict)
    starts: dict[int, int] = dc_field(default_factory=dict)
    epochs: dict[int, int | None] = dc_field(default_factory=dict)
    void: set[int] = dc_field(default_factory=set)
    #: exactly-once, per input partition: the group's committed offset when it is past the
    #: batch's first event (the partition's previous owner finished those events after this
    #: worker was assigned it): records triggered by an event before it are not produced
    floors: dict[int, int] = dc_field(default_factory=dict)
    #: exactly-once: resolved when the transaction holding the batch committed (True), or when
    #: nothing of it was left to commit (False: every part void)
    done: asyncio.Future[bool] | None = None

    def cover(self, records: Sequence[RawRecord]) -> Outbox:
        """Exactly-once: note the input partitions, offsets and epochs of ``records``."""
        for r in records:
            p = r.partition
            self.offsets[p] = max(r.offset + 1, self.offsets.get(p, 0))
            self.starts[p] = min(r.offset, self.starts.get(p, r.offset))
            self.epochs[p] = r.epoch if p not in self.epochs or r.epoch == self.epochs[p] else None
        return self

    def live(self) -> list[Record]:
        """Exactly-once: the records a transaction produces now (void parts and events the
        previous owner finished left out)."""
        return [r for r in self.records if r[4] is None or (r[4] not in self.void and (r[5] is None or r[5] >= self.floors.get(r[4], -1)))]

    async def send(self, send: SendFn | None, topic: str, key: bytes | None, value: bytes, headers: Headers = None,
                   partition: int | None = None, offset: int | None = None) -> None:
        """Produce one record triggered by the input event at ``partition``/``offset`` (exactly
        once: keep it for the transaction)."""
        if self.deferred:
            self.records.append((topic, key, value, headers, partition, offset))
            return
        assert send is not None
        try:
            fut = await send(topic, key, value, headers, partition)
        except Exception as exc:  # aiokafka errors while enqueuing (broker down, buffer full…)
            raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc
        self.records.append((topic, key, value, headers, partition, offset))
        self.futures.append(fut)

    async def wait(self) -> list[int]:
        """Indices of the records whose delivery failed."""
        if not self.futures:
            return []
        results = await asyncio.gather(*self.futures, return_exceptions=True)
        return [i for i, r in enumerate(results) if isinstance(r, BaseException)]

    async def resend(self, send: SendFn, indices: list[int]) -> None:
        for i in indices:
            topic, key, value, headers, partition, _ = self.records[i]
            try:
                self.futures[i] = await send(topic, key, value, headers, partition)
            except Exception as exc:
                raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc

    def extend(self, other: Outbox) -> None:
        """At least once: the records of ``other`` too (the poison isolation's one-event batches)."""
        self.records += other.records
        self.futures += other.futures
        self.enqueue_ms += other.enqueue_ms
        self.event_ts += other.event_ts


class KafkaSender:
    """Our own aiokafka producer for ``recs`` and ``clicks.dlq``: faust's ``topic.send`` cost
    ~5x more CPU per record here (docs/BENCHMARKS.md). Started on first use; key-hash
    partitioning is Kafka's default (murmur2), so a user's recommendations stay in order.

    No linger (``ATTNREC_PRODUCER_LINGER_MS``, default 0): a record is sent at once when the
    connection is idle, and records queue up into one request only while the previous request
    to the broker is in flight (aiokafka keeps one in flight per broker), so the producer
    batches exactly when there is a backlog, as the batcher does."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._p: Any = None
        self._lock = asyncio.Lock()

    async def _producer(self) -> Any:
        if self._p is None:
            async with self._lock:
                if self._p is None:
                    from aiokafka import AIOKafkaProducer

                    p = AIOKafkaProducer(
                        bootstrap_servers=self.s.kafka_bootstrap,
                        acks="all",
                        linger_ms=int(self.s.producer_linger_ms),
                        max_batch_size=512 * 1024,
                        request_timeout_ms=30000,
                        **aiokafka_security(self.s),
                    )
                    try:
                        await p.start()
                    except Exception:
                        await p.stop()
                        raise
                    self._p = p
        return self._p

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None,
                   partition: int | None = None) -> asyncio.Future[Any]:
        p = await self._producer()
        return await p.send(topic, value=value, key=key, headers=headers)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self._p is not None:
            p, self._p = self._p, None
            await p.stop()




class Transactions(Protocol):
    """What :class:`Output` needs of the exactly-once sender (:mod:`attnrec.stream.core.transactions`)."""

    def enqueue(self, out: Outbox) -> None: ...

    def epoch(self, partition: int) -> int | None: ...

    def current(self, partition: int, epoch: int | None) -> bool: ...

    async def stop(self) -> None: ...


class Output:
    """Where a batch's records go and how they are confirmed: a plain producer whose deliveries
    are awaited (at least once), or with ``transactional`` the worker's transactions, which
    commit them with the batch's input offsets (exactly once)."""

    def __init__(self, s: Settings, metrics: WorkerMetrics, sender: Any = None, *, transactional: bool = False) -> None:
        self.s = s
        self.metrics = metrics
        self.sender = sender  # a KafkaSender, or with ``transactional`` the Transactions
        self.txn: Transactions | None = sender if transactional else None
        #: async (topic, key, value, headers, input partition) -> delivery future (tests may set their own)
        self.send: SendFn | None = sender.send if sender is not None and not transactional else None

    async def publish(self, records: Sequence[RawRecord], parsed: Parsed, recs: Sequence[Recommendation]) -> Outbox:
        """Hand a batch's dead letters and recommendations (each with its trigger's partition
        and offset) to the producer, or exactly once to the next transaction."""
        t0 = time.perf_counter()
        out = Outbox(deferred=self.txn is not None)
        if self.txn is not None:
            out.cover(records)
        for (key, env, reason), src in zip(parsed.dead, parsed.dead_sources, strict=True):
            log.warning("dead letter (%s): %s", reason, orjson.loads(env)["error"])
            await out.send(self.send, self.s.dlq_topic, key, env, [DLQ_SCHEMA], records[src].partition, records[src].offset)
        topic, send = self.s.recs_topic, self.send
        for r in recs:
            src = records[r.source]
            await out.send(send, topic, r.user_id.encode(), r.data, [RECS_SCHEMA, *r.headers], src.partition, src.offset)
        out.enqueue_ms = 1000 * (time.perf_counter() - t0)
        out.event_ts = [r.payload["event_ts"] for r in recs]
        if self.txn is not None:
            self.txn.enqueue(out)
        return out

    async def deliver(self, out: Outbox) -> bool:
        """Wait until the broker has every record of ``out``: at least once, re-send what
        failed, with backoff, until it is delivered; exactly once, until the transaction holding
        it committed. Returns False when nothing of the batch was this worker's to commit any
        more (its partitions moved: another worker redoes its events). Never raises except on
        cancellation."""
        t0 = time.perf_counter()
        if out.done is not None:
            if not await out.done:
                self.metrics.void_parts.inc(len(out.void))
                return False
        attempt = 0
        while out.done is None:
            failed = await out.wait()
            if not failed:
                break
            attempt += 1
            self.metrics.retries.labels("transient").inc()
            delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
            log.warning("%d of %d produced records not delivered (attempt %d); re-sending in %.2fs",
                        len(failed), len(out.records), attempt, delay)  # fmt: skip
            await asyncio.sleep(delay)
            try:
                await out.resend(self.send, failed)  # type: ignore[arg-type]
            except TransientError as exc:
                log.warning("re-send failed: %s", exc)
        if out.void:
            self.metrics.void_parts.inc(len(out.void))
        self.metrics.produce_ms.observe(out.enqueue_ms + 1000 * (time.perf_counter() - t0))
        now = time.time() * 1000
        for ts in out.event_ts:
            self.metrics.e2e_ms.observe(max(0.0, now - ts))
        return True

    async def dead_letter_poison(self, r: RawRecord, attempts: int, exc: BaseException | None = None) -> Outbox:
        """Dead-letter one event that failed ``attempts`` times on its own, and deliver it (in
        the next transaction, exactly once). Returns an empty :class:`Outbox` (nothing left to
        deliver)."""
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        msg = f"poison: processing failed {attempts} times{why}"[:1000]
        env = dlq_envelope(msg, r.value, r.key, r.topic, r.partition, r.offset, int(time.time() * 1000))
        log.error("dead-lettering poison event at %s:%d@%d: %s", r.topic, r.partition, r.offset, msg)
        out = Outbox(deferred=self.txn is not None)
        if self.txn is not None:
            out.cover([r])
        while True:
            try:
                await out.send(self.send, self.s.dlq_topic, r.key, env, [DLQ_SCHEMA], r.partition, r.offset)
                break
            except TransientError as e:
                log.warning("cannot dead-letter yet: %s", e)
                await asyncio.sleep(1.0)
        if self.txn is not None:
            self.txn.enqueue(out)
        await self.deliver(out)
        self.metrics.dead.labels(dlq_reason(msg)).inc()
        return Outbox()

    async def stop(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
