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
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, Protocol

import orjson

from attnrec.errors import FencedError, TransientError
from attnrec.events import dlq_envelope
from attnrec.kafka_util import aiokafka_security
from attnrec.schemas import header as schema_header
from attnrec.settings import Settings

from .metrics import WorkerMetrics
from .recommend import Recommendation
from .records import Parsed, RawRecord, dlq_reason

__all__ = ["Headers", "SendFn", "Outbox", "KafkaSender", "Transactions", "Output", "RECS_SCHEMA", "DLQ_SCHEMA"]

log = logging.getLogger(__name__)
#: The ``attnrec-schema`` header of every record produced (``recs/1``, ``clicks.dlq/1``:
#: docs/schemas/README.md).
RECS_SCHEMA, DLQ_SCHEMA = schema_header("recs"), schema_header("clicks.dlq")

Headers = list[tuple[str, bytes]] | None
#: async (topic, key, value, headers, input partition) -> the broker's delivery future; the input
#: partition routes a record to its transaction (exactly-once), a plain producer ignores it
SendFn = Callable[[str, "bytes | None", bytes, Headers, "int | None"], Awaitable["asyncio.Future[Any]"]]


@dataclass
class Outbox:
    """The records one batch produced, and the broker's delivery futures for them."""

    records: list[tuple[str, bytes | None, bytes, Headers, int | None]] = dc_field(default_factory=list)
    futures: list[asyncio.Future[Any]] = dc_field(default_factory=list)
    enqueue_ms: float = 0.0
    event_ts: list[int] = dc_field(default_factory=list)
    #: exactly-once, per input partition of the batch: the offset after its last event (committed
    #: with the batch's transaction on that partition), its first event's offset, the partition's
    #: assignment epoch when the events were received (stream.transactions), and the partitions
    #: whose part of the batch is void (not produced, not committed: another worker redoes it)
    offsets: dict[int, int] = dc_field(default_factory=dict)
    starts: dict[int, int] = dc_field(default_factory=dict)
    epochs: dict[int, int | None] = dc_field(default_factory=dict)
    void: set[int] = dc_field(default_factory=set)
    #: exactly-once, per input partition: the group's committed offset when it is past the
    #: batch's first event (the partition's previous owner finished those events after this
    #: worker was assigned it): records triggered by an event before it are not produced
    floors: dict[int, int] = dc_field(default_factory=dict)

    def cover(self, records: Sequence[RawRecord]) -> Outbox:
        """Exactly-once: note the input partitions, offsets and epochs of ``records``."""
        for r in records:
            p = r.partition
            self.offsets[p] = max(r.offset + 1, self.offsets.get(p, 0))
            self.starts[p] = min(r.offset, self.starts.get(p, r.offset))
            self.epochs[p] = r.epoch if p not in self.epochs or r.epoch == self.epochs[p] else None
        return self

    def indices(self, partition: int) -> list[int]:
        """The records produced in ``partition``'s transaction."""
        return [i for i, rec in enumerate(self.records) if rec[4] == partition]

    async def send(self, send: SendFn, topic: str, key: bytes | None, value: bytes, headers: Headers = None,
                   partition: int | None = None, offset: int | None = None) -> None:
        """Produce one record triggered by the input event at ``partition``/``offset``."""
        if partition is not None and partition in self.void:
            return  # exactly-once: that partition's part of the batch is another worker's
        if partition is not None and offset is not None and offset < self.floors.get(partition, -1):
            return  # exactly-once: the partition's previous owner produced it (and committed past it)
        try:
            fut = await send(topic, key, value, headers, partition)
        except Exception as exc:  # aiokafka errors while enqueuing (broker down, buffer full…)
            raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc
        self.records.append((topic, key, value, headers, partition))
        self.futures.append(fut)

    async def wait(self) -> list[int]:
        """Indices of the records whose delivery failed."""
        if not self.futures:
            return []
        results = await asyncio.gather(*self.futures, return_exceptions=True)
        return [i for i, r in enumerate(results) if isinstance(r, BaseException)]

    async def resend(self, send: SendFn, indices: list[int]) -> None:
        for i in indices:
            topic, key, value, headers, partition = self.records[i]
            try:
                self.futures[i] = await send(topic, key, value, headers, partition)
            except Exception as exc:
                raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc

    def extend(self, other: Outbox) -> None:
        self.records += other.records
        self.futures += other.futures
        self.enqueue_ms += other.enqueue_ms
        self.event_ts += other.event_ts
        for part, off in other.offsets.items():
            self.offsets[part] = max(off, self.offsets.get(part, off))
        for part, start in other.starts.items():
            self.starts[part] = min(start, self.starts.get(part, start))
        self.epochs.update(other.epochs)
        self.void |= other.void
        for part, floor in other.floors.items():
            self.floors[part] = max(floor, self.floors.get(part, floor))


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

    async def begin(self, out: Outbox, partitions: Iterable[int] | None = None) -> None: ...

    async def abort(self, partitions: Iterable[int]) -> None: ...

    async def commit_one(self, out: Outbox, part: int) -> bool: ...

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None,
                   partition: int | None = None) -> asyncio.Future[Any]: ...

    async def stop(self) -> None: ...

    def epoch(self, partition: int) -> int | None: ...

    def current(self, partition: int, epoch: int | None) -> bool: ...


class Output:
    """Where a batch's records go and how they are confirmed: a plain producer whose deliveries
    are awaited (at least once), or with ``txn`` the batch's transactions, committed with its
    input offsets (exactly once)."""

    def __init__(self, s: Settings, metrics: WorkerMetrics, sender: Any = None, *, transactional: bool = False) -> None:
        self.s = s
        self.metrics = metrics
        self.sender = sender  # a KafkaSender, or with ``transactional`` the Transactions
        self.txn: Transactions | None = sender if transactional else None
        #: async (topic, key, value, headers, input partition) -> delivery future (tests may set their own)
        self.send: SendFn | None = sender.send if sender is not None else None

    @contextlib.asynccontextmanager
    async def batch(self, records: Sequence[RawRecord]) -> AsyncIterator[Outbox]:
        """An :class:`Outbox` for the output of ``records``; exactly once, in transactions
        opened for their partitions, aborted when the block raises."""
        out = Outbox()
        if self.txn is None:
            yield out
            return
        await self.txn.begin(out.cover(records))  # the offsets its transactions commit
        try:
            yield out
        except BaseException:
            await self.txn.abort(out.offsets)
            raise

    async def publish(self, records: Sequence[RawRecord], parsed: Parsed, recs: Sequence[Recommendation]) -> Outbox:
        """Hand a batch's dead letters and recommendations (each with its trigger's partition
        and offset) to the producer; exactly once, in the batch's transactions."""
        t0 = time.perf_counter()
        async with self.batch(records) as out:
            await self.dead_letters(out, records, parsed)
            topic, send = self.s.recs_topic, self.send
            for r in recs:
                src = records[r.source]
                await out.send(send, topic, r.user_id.encode(), r.data, [RECS_SCHEMA, *r.headers], partition=src.partition,
                               offset=src.offset)
        out.enqueue_ms = 1000 * (time.perf_counter() - t0)
        out.event_ts = [r.payload["event_ts"] for r in recs]
        return out

    async def dead_letters(self, out: Outbox, records: Sequence[RawRecord], parsed: Parsed) -> None:
        """Hand the batch's invalid records to the dead-letter topic."""
        for (key, env, _reason), src in zip(parsed.dead, parsed.dead_sources, strict=True):
            log.warning("dead letter (%s): %s", _reason, orjson.loads(env)["error"])
            await out.send(self.send, self.s.dlq_topic, key, env, [DLQ_SCHEMA], partition=records[src].partition,
                           offset=records[src].offset)

    async def deliver(self, out: Outbox) -> bool:
        """Wait until the broker has every record of ``out``; re-send what failed, with
        backoff, until it is delivered. Exactly-once: commit the batch's transactions (a failed
        commit is aborted, and the records are sent again in new ones with the same offsets).
        Returns False when the batch's partitions are another worker's now (its output void,
        its events not to be acked). Never raises except on cancellation."""
        t0 = time.perf_counter()
        if self.txn is not None:
            if not await self._commit(out):
                return False
        attempt = 0
        while self.txn is None:
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
                await out.resend(self.send, failed)
            except TransientError as exc:
                log.warning("re-send failed: %s", exc)
        self.metrics.produce_ms.observe(out.enqueue_ms + 1000 * (time.perf_counter() - t0))
        now = time.time() * 1000
        for ts in out.event_ts:
            self.metrics.e2e_ms.observe(max(0.0, now - ts))
        return True

    async def _commit(self, out: Outbox) -> bool:
        """Commit ``out``'s transactions, one input partition at a time; a failed one is redone
        in a new transaction until it commits or its part of the batch is void (the partition
        is another worker's). True when every part committed."""
        await asyncio.gather(*(self._commit_part(out, part) for part in sorted(out.offsets)))
        if out.void:
            self.metrics.void_parts.inc(len(out.void))
            log.info("batch's part(s) in partition(s) %s void: another worker processes or processed them", sorted(out.void))
        return not out.void

    async def _commit_part(self, out: Outbox, part: int) -> None:
        """One partition's transaction of ``out`` (the partitions' commits run side by side)."""
        assert self.txn is not None
        attempt = 0
        while True:
            try:
                await self.txn.commit_one(out, part)
                return
            except TransientError as exc:
                attempt += 1
                if isinstance(exc, FencedError):
                    self.metrics.fenced.inc()
                self.metrics.retries.labels("transient").inc()
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("transaction of partition %d failed (attempt %d): %s; its %d records again in %.2fs",
                            part, attempt, exc, len(out.indices(part)), delay)  # fmt: skip
                await asyncio.sleep(delay)
                try:
                    await self.txn.begin(out, [part])
                    if part not in out.void:
                        await out.resend(self.send, out.indices(part))
                except TransientError as e:
                    log.warning("re-send in a new transaction failed: %s", e)
                    await self.txn.abort([part])

    async def dead_letter_poison(self, r: RawRecord, attempts: int, exc: BaseException | None = None) -> Outbox:
        """Dead-letter one event that failed ``attempts`` times on its own, and deliver it (in
        its own transaction, exactly once). Returns an empty :class:`Outbox` (nothing left to
        deliver)."""
        why = f": {type(exc).__name__}: {exc}" if exc is not None else ""
        msg = f"poison: processing failed {attempts} times{why}"[:1000]
        env = dlq_envelope(msg, r.value, r.key, r.topic, r.partition, r.offset, int(time.time() * 1000))
        log.error("dead-lettering poison event at %s:%d@%d: %s", r.topic, r.partition, r.offset, msg)
        while True:
            try:
                async with self.batch([r]) as out:
                    await out.send(self.send, self.s.dlq_topic, r.key, env, [DLQ_SCHEMA], partition=r.partition,
                                   offset=r.offset)
                break
            except TransientError as e:
                log.warning("cannot dead-letter yet: %s", e)
                await asyncio.sleep(1.0)
        await self.deliver(out)
        self.metrics.dead.labels(dlq_reason(msg)).inc()
        return Outbox()

    async def stop(self) -> None:
        if self.sender is not None:
            await self.sender.stop()
