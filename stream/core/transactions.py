"""Exactly-once output: every batch's recommendations, dead letters and input offsets commit in
one Kafka transaction of the worker's transactional producers (two, used in turn: :data:`PRODUCERS`),
fenced by the consumer group's generation (KIP-447, :mod:`attnrec.stream.core.kip447`).

Who fences whom:

- **the group coordinator fences a zombie.** Offsets are committed with the consumer's group
  metadata (generation, member id); once the group has moved on from a member (it was paused
  past its session timeout, or left), the coordinator refuses its commits, so its transaction
  can only abort and a ``read_committed`` consumer never sees what it produced.
- **a new owner waits for the old owner's commit in flight.** Before a partition's first batch
  of an assignment commits, the worker reads the group's committed offset of that partition
  *stable* (OffsetFetch ``require_stable``: the coordinator holds the answer while a transaction
  that commits offsets of the partition is open). If it is past events this worker holds, the
  previous owner committed them after this worker fetched its start position: they are done,
  the records they triggered are not produced again (``Outbox.floors``).
- **assignment epochs** drop what a worker holds of a partition it lost: every assignment or
  revocation of a partition starts a new epoch on this worker; events are stamped with their
  partition's epoch on arrival, and a part of a batch whose epoch has passed is void (not
  produced, not committed: the partition's next owner reads those events again).

One transaction per commit, not per batch: finished batches queue (:meth:`Transactions.enqueue`)
and one task commits everything queued in one transaction — their records, then the offset
after the last event of each input partition — while the next batches are read, applied and
scored. An idle stream commits each batch at once; under load, the batches that finish while a
transaction commits share the next one (Kafka Streams' commit interval, chosen by the load). A
failed transaction is aborted and redone, with the parts that became void left out, before
anything after it; a ``read_committed`` consumer sees a batch's records exactly when its input
offsets are committed. Redis is not part of the transaction but is idempotent (offset watermark
+ event_id window): a redone event is not applied twice, and it triggers its recommendation
again (the first one was aborted).

faust must not commit offsets of its own in this mode (a late plain commit could move the group
back behind a transaction's): the clicks topic is consumed without acks (:mod:`attnrec.stream.app`).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from attnrec.errors import FencedError, TransientError
from attnrec.kafka_util import aiokafka_security
from attnrec.settings import Settings

from .kip447 import GroupFencedError, GroupMetadata, TransactionalProducer
from .metrics import WorkerMetrics
from .output import Outbox

__all__ = ["Transactions"]

log = logging.getLogger(__name__)

#: aiokafka's retry backoff for the transactional producer (its default is 100 ms). A produce
#: into a transaction whose coordinator is still writing an earlier step is refused as
#: retriable (CONCURRENT_TRANSACTIONS, which the broker reports to clients of aiokafka's
#: protocol version as NOT_ENOUGH_REPLICAS, KAFKA-15459); the step takes about a millisecond.
RETRY_BACKOFF_MS = 10
_FENCED = ("ProducerFenced", "InvalidProducerEpoch", "TransactionalIdAuthorizationFailed", "IllegalStateError")
#: Transactional producers per worker, used in turn. The transaction coordinator completes a
#: transaction (its markers) after answering its commit; the same producer's next transaction
#: is refused meanwhile (CONCURRENT_TRANSACTIONS) and aiokafka retries it after 20 ms, which at
#: 100 events/s was 29 ms of every recommendation's latency. The other producer's transaction
#: does not wait; the turns keep the order (one transaction at a time, each begun after the
#: previous one's commit returned).
PRODUCERS = 2


class Transactions:
    """The worker's transactional producer, the queue of finished batches and the task that
    commits them, and the worker's ownership of its input partitions (epochs, floors)."""

    def __init__(self, s: Settings, metrics: WorkerMetrics | None = None,
                 group: Callable[[], GroupMetadata] | None = None) -> None:  # fmt: skip
        self.s = s
        self.metrics = metrics
        #: the consumer's group metadata now (the app sets it to faust's consumer's)
        self.group: Callable[[], GroupMetadata] = group or (lambda: GroupMetadata(s.group_id))
        self.transactional_id = f"{s.group_id}-{s.clicks_topic}-{uuid.uuid4().hex[:12]}"
        #: two producers, used in turn (:data:`PRODUCERS`)
        self._producers: list[TransactionalProducer | None] = [None] * PRODUCERS
        self._turn = 0
        self.epochs: dict[int, int] = {}
        self.owned: set[int] | None = None  # None until the first assignment (then every partition is)
        self._floors: dict[int, tuple[int, int]] = {}  # partition -> (epoch, stable committed offset then)
        self._queue: list[Outbox] = []
        self._committing: list[Outbox] = []
        self._have = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.transactions = 0  # committed
        self.records = 0  # produced in transactions (committed or not)

    # ------------------------------------------------------------------ ownership
    def epoch(self, partition: int) -> int | None:
        """The partition's current epoch, None when it is not this worker's."""
        if self.owned is not None and partition not in self.owned:
            return None
        return self.epochs.get(partition, 0)

    def current(self, partition: int, epoch: int | None) -> bool:
        return epoch is not None and self.epoch(partition) == epoch

    def revoked(self, partitions: Iterable[int]) -> None:
        """Partitions taken away (a rebalance starts): what this worker holds of them is void."""
        parts = set(partitions)
        for p in parts:
            self.epochs[p] = self.epochs.get(p, 0) + 1
        self.owned = (self.owned or set()) - parts

    def assigned(self, partitions: Iterable[int]) -> None:
        """The worker's whole new assignment: a new epoch for each partition that was not
        already this worker's."""
        parts = set(partitions)
        for p in parts - (self.owned or set()):
            self.epochs[p] = self.epochs.get(p, 0) + 1
        self.owned = parts

    # ------------------------------------------------------------------ the queue
    def enqueue(self, out: Outbox) -> None:
        """A finished batch: its records and offsets commit in the next transaction."""
        if self._task is None or self._task.done():
            if self._task is not None and self._task.done() and not self._task.cancelled():
                self._task.result()  # a dead committer is a bug: surface it
            self._task = asyncio.ensure_future(self._run())
        out.done = asyncio.get_running_loop().create_future()
        self._queue.append(out)
        self._have.set()

    async def _run(self) -> None:
        """The committer: everything queued since the last transaction, in one."""
        while True:
            await self._have.wait()
            outs, self._queue = self._queue, []
            self._have.clear()
            if not outs:
                continue
            self._committing = outs
            try:
                await self._commit(outs)
            except BaseException:
                for out in outs:
                    if out.done is not None and not out.done.done():
                        out.done.cancel()
                raise
            finally:
                self._committing = []
            for out in outs:
                if out.done is not None and not out.done.done():
                    out.done.set_result(not set(out.offsets) <= out.void)

    async def _commit(self, outs: Sequence[Outbox]) -> None:
        """Commit ``outs`` in one transaction; a failure aborts it and it is redone, without the
        parts that became void, until it commits or nothing of it is left."""
        attempt = 0
        while True:
            offsets: dict[int, int] = {}
            try:
                offsets = await self._prepare(outs)
                # the group's metadata as of the epochs just checked (no await in between): a
                # rejoin after this point (a zombie resuming) moves the generation on, so the
                # coordinator refuses this commit; read later, it would carry the new generation
                # for parts of the old one
                group = self.group()
                if not offsets:
                    return  # every part void or done by the previous owner
                await self._transaction(outs, offsets, group)
                self.transactions += 1
                if self.metrics is not None:
                    self.metrics.transactions.inc()
                return
            except (TransientError, FencedError, GroupFencedError) as exc:
                attempt += 1
                fenced = isinstance(exc, (FencedError, GroupFencedError))
                # A commit that failed may still have gone through: the coordinator died, or the
                # connection to it, after it had the commit. Its offsets are the record of it: read
                # them again (stable: after the outcome is written) before redoing, so a transaction
                # that did commit is not produced a second time.
                for p in offsets:
                    self._floors.pop(p, None)
                if self.metrics is not None:
                    (self.metrics.fenced if fenced else self.metrics.retries.labels("transient")).inc()
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("transaction of %d batch(es) failed (attempt %d): %s; again in %.2fs", len(outs), attempt,
                            exc, delay)  # fmt: skip
                await asyncio.sleep(delay)

    async def _prepare(self, outs: Sequence[Outbox]) -> dict[int, int]:
        """Mark the parts whose epoch has passed void; apply each partition's floor (read stable
        at the first commit of an epoch); the offset to commit per live partition."""
        need = {p for out in outs for p, e in out.epochs.items() if p not in out.void and self.current(p, e)
                and self._floors.get(p, (None, -1))[0] != e}
        if need:
            committed = await self._stable(sorted(need))
            for p in need:
                self._floors[p] = (self.epochs.get(p, 0), committed.get(p, -1))
        offsets: dict[int, int] = {}
        for out in outs:
            for p, end in out.offsets.items():
                if p in out.void or not self.current(p, out.epochs.get(p)):
                    out.void.add(p)
                    continue
                floor = self._floors[p][1]
                if floor > out.starts[p]:
                    if out.floors.get(p) != floor:
                        log.info("partition %d: committed up to offset %d (by its previous owner, or by a transaction of "
                                 "this worker that failed but had committed) and this batch starts at %d: the events "
                                 "before it are done", p, floor, out.starts[p])  # fmt: skip
                    out.floors[p] = floor
                    if floor >= end:
                        out.void.add(p)  # all of it done
                        continue
                offsets[p] = max(end, offsets.get(p, 0))
        return offsets

    async def _transaction(self, outs: Sequence[Outbox], offsets: dict[int, int], group: GroupMetadata) -> None:
        from aiokafka import TopicPartition

        self._turn = (self._turn + 1) % PRODUCERS
        p = await self._producer_started(self._turn)
        futures: list[asyncio.Future[Any]] = []
        try:
            await p.begin_transaction()
            for out in outs:
                for topic, key, value, headers, _, _ in out.live():
                    futures.append(await p.send(topic, value=value, key=key, headers=headers))
            self.records += len(futures)
            topic = self.s.clicks_topic
            await p.send_offsets_to_transaction({TopicPartition(topic, q): o for q, o in offsets.items()}, group)
            await p.commit_transaction()
        except BaseException as exc:
            for f in futures:  # their errors are the transaction's: retrieved here, reported below
                if f.done() and not f.cancelled():
                    f.exception()
            await self._abort(p, exc)
            if isinstance(exc, GroupFencedError):
                raise
            if type(exc).__name__ in _FENCED:
                raise FencedError(f"the transactional producer was fenced: {exc}") from exc
            if isinstance(exc, Exception):
                raise TransientError(f"kafka transaction: {type(exc).__name__}: {exc}") from exc
            raise

    async def _abort(self, p: TransactionalProducer, exc: BaseException) -> None:
        """After a failure the producer is replaced, not asked to abort: its replacement's
        InitProducerId (the same transactional id) ends on the coordinator whatever the failed
        transaction left open, aborted (or, if its commit had been prepared, committed, which
        the floors read next find). aiokafka's own abort is not enough: after an abortable
        error it forgets the transaction's partitions and aborts locally only; the broker's
        transaction stayed open with the records sent, and the producer's next transaction
        committed them with its own (a batch produced twice read committed, 2026-12-07)."""
        log.info("transactional producer replaced after %s: %s", type(exc).__name__, exc)
        await self._drop(p)

    # ------------------------------------------------------------------ the producers
    async def _producer_started(self, turn: int = 0) -> TransactionalProducer:
        p = self._producers[turn]
        if p is None:
            tid = f"{self.transactional_id}-{turn}"
            p = TransactionalProducer(
                bootstrap_servers=self.s.kafka_bootstrap,
                transactional_id=tid,
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
                await p.start()  # InitProducerId
            except Exception as exc:
                await p.stop()
                raise TransientError(f"kafka transactional producer {tid}: {type(exc).__name__}: {exc}") from exc
            self._producers[turn] = p
        return p

    async def _drop(self, p: TransactionalProducer | None = None) -> None:
        """Stop ``p`` (every producer when None); its turn starts a new one."""
        for i, q in enumerate(self._producers):
            if q is not None and (p is None or q is p):
                self._producers[i] = None
                try:
                    await q.stop()
                except Exception as exc:  # a fenced producer may refuse to flush
                    log.debug("stopping a transactional producer: %s", exc)

    async def _stable(self, partitions: list[int]) -> dict[int, int]:
        """The group's committed offsets of ``partitions``, once no transaction commits any."""
        p = await self._producer_started(self._turn)
        try:
            return await p.committed(self.s.group_id, self.s.clicks_topic, partitions,
                                     timeout_s=self.s.transaction_timeout_s + 30)  # fmt: skip
        except Exception as exc:
            raise TransientError(f"committed offsets of group {self.s.group_id}: {type(exc).__name__}: {exc}") from exc

    async def idle(self, timeout_s: float) -> bool:
        """Wait until everything queued has committed (or ``timeout_s``); True when it has."""
        deadline = time.monotonic() + timeout_s
        while self._queue or self._committing:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True

    async def stop(self) -> None:
        """Commit what is queued (a stop request), then stop the producer."""
        if self._task is not None and not self._task.done():
            await self.idle(30.0)
            self._task.cancel()
        await self._drop()
