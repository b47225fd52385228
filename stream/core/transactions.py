"""Exactly-once output: a batch's recommendations, dead letters and input offsets in Kafka
transactions (consume-transform-produce), one transactional producer per input partition.

Fencing. aiokafka commits offsets in a transaction by group id only (no group generation,
KIP-447), so a worker's claim on an input partition is checked three ways:

- **transactional id per partition**: the producer of input partition ``p`` is
  ``<group>-<clicks topic>-<p>``. Starting it (InitProducerId) aborts the open transaction of
  any other producer with that id and fences it: its later commits fail.
- **assignment epochs**: every assignment or revocation of ``p`` starts a new epoch of ``p`` on
  this worker. An event is stamped with its partition's epoch when the worker receives it; a
  batch is committed only while its epochs are current, events of an older epoch are dropped
  (the partition's next owner reads them again from the committed offset), and each epoch
  starts a producer of its own (so the new owner of ``p`` fences the old one at assignment).
- **the committed offset**, read once a producer has started (its start fenced every earlier
  producer of ``p``, so no older owner can commit after that read):

  - the first producer of a new epoch (an assignment): if the group's committed offset is past
    the first event the worker received, the previous owner finished those events after this
    worker fetched its start position (a worker that leaves commits its last batch on the way
    out, and aiokafka's transactional offset commit carries no group generation). They are
    done: their recommendations are not produced again, and the batch continues from the
    committed offset.
  - a replacement within an epoch (after a failed or fenced producer) commits its first batch
    only if the committed offset is not beyond the batch's first event. If it is, another
    worker has processed ``p`` since this worker last did: this worker is a zombie (it was
    paused past its session timeout, say) and gives ``p`` up until its next assignment (which
    comes: the group has moved on without it).

So a fenced producer is not trusted to mean "someone else owns p" (a transaction the broker
timed out fences its producer too); it is replaced and the committed offset decides.

One batch, for each input partition it touches: begin; produce its users' recommendations and
its dead letters; add the offset after its last event to the transaction; commit. A consumer of
``recs`` with ``isolation.level=read_committed`` sees a batch's records exactly when its input
offsets are committed. A failure before the commit aborts: the records disappear for such a
consumer, the offsets are not committed, and the partition's part of the batch is redone in a
new transaction. Redis is not part of the transaction but is idempotent (offset watermark +
event_id window): a redone event is not applied twice, and it triggers its recommendation again
(the first one was aborted).

faust must not commit offsets of its own in this mode (a late plain commit could move the group
back behind a transaction's): the clicks topic is consumed without acks (:mod:`attnrec.stream.app`), and
the committed offsets are the transactions'.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from attnrec.errors import FencedError, TransientError
from attnrec.kafka_util import aiokafka_security, committed_offsets
from attnrec.settings import Settings

from .output import Headers, Outbox

__all__ = ["TransactionalSender"]

log = logging.getLogger(__name__)

CommittedFn = Callable[[], Awaitable[dict[int, int]]]

#: aiokafka's retry backoff for the transactional producers (its default is 100 ms). A produce
#: into a transaction whose coordinator is still writing an earlier step (another partition's
#: AddPartitionsToTxn, the previous transaction's markers) is refused as retriable
#: (CONCURRENT_TRANSACTIONS, which the broker reports to clients of aiokafka's protocol version
#: as NOT_ENOUGH_REPLICAS, KAFKA-15459); the step takes about a millisecond, so waiting 100 ms
#: before the retry was most of a batch's latency.
RETRY_BACKOFF_MS = 10


def _fenced(exc: BaseException) -> bool:
    return type(exc).__name__ in ("ProducerFenced", "InvalidProducerEpoch", "TransactionalIdAuthorizationFailed")


class TransactionalSender:
    """One transactional aiokafka producer per input partition and assignment epoch, and a lock
    per partition so a partition's transactions follow one another in batch order."""

    def __init__(self, s: Settings, committed: CommittedFn | None = None) -> None:
        self.s = s
        self._committed = committed or self._group_committed
        self._producers: dict[int, tuple[Any, int]] = {}  # partition -> (producer, the epoch it serves)
        self._locks: dict[int, asyncio.Lock] = {}
        self._open: set[int] = set()
        self._unverified: dict[int, float] = {}  # partition -> when its producer started (it has not committed yet)
        # partition -> (epoch, the committed offset read once that epoch's producer had started)
        self._floors: dict[int, tuple[int, int]] = {}
        self._fetch: tuple[float, asyncio.Future[dict[int, int]]] | None = None
        self.epochs: dict[int, int] = {}
        self.owned: set[int] | None = None  # None until the first assignment (then every partition is)
        self._warming: asyncio.Task[None] | None = None

    def transactional_id(self, partition: int) -> str:
        return f"{self.s.group_id}-{self.s.clicks_topic}-{partition}"

    # ------------------------------------------------------------------ ownership
    def epoch(self, partition: int) -> int | None:
        """The partition's current epoch, None when it is not this worker's."""
        if self.owned is not None and partition not in self.owned:
            return None
        return self.epochs.get(partition, 0)

    def current(self, partition: int, epoch: int | None) -> bool:
        return epoch is not None and self.epoch(partition) == epoch

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions taken away (a rebalance starts): their batches in flight are void."""
        parts = set(partitions)
        for p in parts:
            self.epochs[p] = self.epochs.get(p, 0) + 1
        self.owned = (self.owned or set()) - parts

    def assigned(self, partitions: Iterable[int]) -> None:
        """The worker's whole new assignment: a new epoch for each partition that was not
        already this worker's, whose producer is started (fencing the previous owner's) right
        away in the background; the producers of partitions no longer owned are stopped."""
        parts = set(partitions)
        before = self.owned or set()
        for p in parts - before:
            self.epochs[p] = self.epochs.get(p, 0) + 1
        self.owned = parts
        self._warming = asyncio.ensure_future(self._warm(sorted(parts - before), sorted(set(self._producers) - parts)))

    def lost(self, partition: int, epoch: int) -> None:
        """Another worker has processed the partition since this one did: give it up until the
        next assignment (which the group's next rebalance brings)."""
        if self.current(partition, epoch):
            self.revoked([partition])
            log.warning("partition %d was processed by another worker since this one last did: leaving it to that "
                        "worker until the next rebalance", partition)  # fmt: skip

    async def _warm(self, starting: list[int], stopping: list[int]) -> None:
        for p in stopping:
            async with self._lock(p):
                if p not in self._open:
                    await self._drop(p)
        for p in starting:
            epoch = self.epoch(p)
            if epoch is None:
                continue
            async with self._lock(p):
                try:
                    await self._producer(p, epoch)
                except TransientError as exc:  # the first batch of p tries again
                    log.warning("%s", exc)

    def _lock(self, partition: int) -> asyncio.Lock:
        return self._locks.setdefault(partition, asyncio.Lock())

    # ------------------------------------------------------------------ producers
    async def _producer(self, partition: int, epoch: int) -> Any:
        have = self._producers.get(partition)
        if have is not None and have[1] == epoch:
            return have[0]
        if have is not None:
            await self._drop(partition)
        from aiokafka import AIOKafkaProducer

        p = AIOKafkaProducer(
            bootstrap_servers=self.s.kafka_bootstrap,
            transactional_id=self.transactional_id(partition),
            enable_idempotence=True,
            acks="all",
            linger_ms=int(self.s.producer_linger_ms),
            max_batch_size=512 * 1024,
            request_timeout_ms=30000,
            retry_backoff_ms=RETRY_BACKOFF_MS,
            transaction_timeout_ms=int(self.s.transaction_timeout_s * 1000),
            **aiokafka_security(self.s),
        )
        try:
            await p.start()  # InitProducerId: aborts and fences any other producer of this partition
        except Exception as exc:
            await p.stop()
            raise TransientError(f"kafka transactional producer for partition {partition}: "
                                 f"{type(exc).__name__}: {exc}") from exc
        self._producers[partition] = (p, epoch)
        self._unverified[partition] = time.monotonic()
        return p

    async def _apply_floor(self, out: Outbox, part: int, epoch: int) -> None:
        """Events of ``part`` before its floor were finished by the previous owner after this
        worker fetched its start position: they produce nothing here. The floor is the group's
        committed offset read once the epoch's first producer had started (which fenced every
        earlier one, so no older owner commits after it), read at the epoch's first batch."""
        if self._floors.get(part, (None, -1))[0] != epoch:
            committed = (await self._committed_since(self._unverified.get(part, 0.0))).get(part)
            self._floors[part] = (epoch, -1 if committed is None else committed)
        floor = self._floors[part][1]
        if floor <= out.starts[part]:
            return
        log.info("partition %d: its previous owner committed up to offset %d after this worker was assigned it "
                 "(this batch starts at %d): the events before it are done", part, floor, out.starts[part])  # fmt: skip
        out.floors[part] = floor
        out.starts[part] = min(floor, out.offsets[part])

    async def _drop(self, partition: int) -> None:
        have = self._producers.pop(partition, None)
        self._unverified.pop(partition, None)
        if have is not None:
            try:
                await have[0].stop()
            except Exception as exc:  # a fenced producer may refuse to flush
                log.debug("stopping the producer of partition %d: %s", partition, exc)

    async def _group_committed(self) -> dict[int, int]:
        return await asyncio.to_thread(committed_offsets, self.s, self.s.group_id, self.s.clicks_topic)

    async def _committed_since(self, t: float) -> dict[int, int]:
        """The group's committed offsets, read after time ``t`` (partitions verified together
        share one read)."""
        if self._fetch is None or self._fetch[0] < t or (self._fetch[1].done() and self._fetch[1].exception()):
            self._fetch = (time.monotonic(), asyncio.ensure_future(self._committed()))
        return await asyncio.shield(self._fetch[1])

    # ------------------------------------------------------------------ transactions
    async def begin(self, out: Outbox, partitions: Iterable[int] | None = None) -> None:
        """Open a transaction for each of the batch's partitions (in partition order, so two
        batches never wait on each other crosswise). A partition whose epoch has passed is
        marked void in ``out`` instead (its records are not produced)."""
        done: list[int] = []
        try:
            for part in sorted(set(out.offsets if partitions is None else partitions)):
                epoch = out.epochs.get(part)
                if not self.current(part, epoch):
                    out.void.add(part)
                    continue
                assert epoch is not None
                await self._lock(part).acquire()
                done.append(part)
                if not self.current(part, epoch):  # the partition was revoked while we waited
                    out.void.add(part)
                    self._close(part)
                    continue
                p = await self._producer(part, epoch)
                await self._apply_floor(out, part, epoch)
                if out.floors.get(part, -1) >= out.offsets[part]:  # all of it was done
                    out.void.add(part)
                    self._close(part)
                    continue
                await p.begin_transaction()
                self._open.add(part)
        except BaseException:
            await self.abort(done)
            raise

    async def send(self, topic: str, key: bytes | None, value: bytes, headers: Headers = None,
                   partition: int | None = None) -> asyncio.Future[Any]:
        """Enqueue a record in the open transaction of input partition ``partition``."""
        assert partition is not None and partition in self._open, f"no open transaction for partition {partition}"
        return await self._producers[partition][0].send(topic, value=value, key=key, headers=headers)  # type: ignore[no-any-return]

    async def commit_one(self, out: Outbox, part: int) -> bool:
        """Commit the batch's transaction on input partition ``part`` with its offset. False: the
        partition's part of the batch is void (the partition is not this worker's any more, or
        another worker has processed it since). Raises FencedError when the producer was fenced
        (it is dropped: the next :meth:`begin` starts a new one) and TransientError on another
        failure (the transaction is aborted); either way the part can be redone."""
        from aiokafka import TopicPartition

        if part in out.void:
            return False
        epoch = out.epochs.get(part)
        if part not in self._open:
            raise TransientError(f"no open transaction for partition {part}")
        try:
            if not self.current(part, epoch):
                await self.abort([part])
                out.void.add(part)
                return False
            assert epoch is not None
            if part in self._unverified:
                committed = (await self._committed_since(self._unverified[part])).get(part)
                if committed is not None and committed > out.starts[part]:
                    log.warning("partition %d: the group's committed offset %d is past this batch's first event "
                                "(%d)", part, committed, out.starts[part])  # fmt: skip
                    await self.abort([part])
                    self.lost(part, epoch)
                    out.void.add(part)
                    return False
            p = self._producers[part][0]
            await p.send_offsets_to_transaction({TopicPartition(self.s.clicks_topic, part): out.offsets[part]},
                                                self.s.group_id)
            await p.commit_transaction()
            self._unverified.pop(part, None)
            self._close(part)
            return True
        except Exception as exc:
            if part not in self._open:
                raise TransientError(f"partition {part}: {type(exc).__name__}: {exc}") from exc
            if _fenced(exc):
                await self._drop(part)
                self._close(part)
                raise FencedError(f"partition {part}'s producer was fenced: {exc}") from exc
            await self.abort([part])
            raise TransientError(f"kafka transaction commit: {type(exc).__name__}: {exc}") from exc

    async def abort(self, partitions: Iterable[int]) -> None:
        """Abort the open transactions of these partitions (a producer that cannot abort is
        dropped: the next transaction starts a new one)."""
        for part in sorted(set(partitions)):
            have = self._producers.get(part)
            try:
                if have is not None and part in self._open:
                    await have[0].abort_transaction()
            except Exception as exc:
                log.warning("abort of partition %d's transaction failed (%s: %s); dropping its producer", part,
                            type(exc).__name__, exc)
                await self._drop(part)
            finally:
                self._close(part)

    def _close(self, part: int) -> None:
        self._open.discard(part)
        lock = self._locks.get(part)
        if lock is not None and lock.locked():
            lock.release()

    async def stop(self) -> None:
        if self._warming is not None and not self._warming.done():
            self._warming.cancel()
        await self.abort(list(self._open))
        for part in list(self._producers):
            await self._drop(part)
