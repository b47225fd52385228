"""The worker's output to Kafka: one aiokafka producer, and the records of one batch.

faust's ``topic.send`` cost ~5x more CPU per record than a plain aiokafka producer here
(docs/BENCHMARKS.md), so recommendations and dead letters go through :class:`KafkaSender`.
A batch's records are collected in an :class:`Outbox` with their delivery futures: the
batch's input offsets may be acknowledged only once every future has resolved.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

from attnrec.stream.logic import RawRecord

from attnrec.errors import TransientError
from attnrec.kafka_util import aiokafka_security
from attnrec.settings import Settings

__all__ = ["Headers", "SendFn", "Outbox", "KafkaSender"]

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


