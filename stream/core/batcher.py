"""Adaptive batching for one agent: every event as it arrives (:func:`feed`), in order, through
the :class:`attnrec.stream.core.processor.Processor`, with deliveries overlapping the next batches.

No window and no wait by default: when the worker is idle an event is processed the moment it
arrives; while a batch is being processed the next events queue, and the next batch is all of
them (up to B). So a calm stream gets batches of one event and the latency of one event, and a
backlog gets batches of B and their throughput, without a setting that trades one for the
other (``ATTNREC_BATCH_WAIT_MS`` adds a fixed wait back, for comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from attnrec.errors import TransientError

from .output import Outbox
from .processor import Processor, where
from .records import RawRecord
from .stage import Batch

__all__ = ["Batcher", "feed"]

log = logging.getLogger(__name__)


class Batcher:
    """Batches for one agent: a FIFO of taken events and one task that processes them.

    The agent hands over each event (:meth:`put_one`) and goes straight back to consuming; the
    task takes up to ``batch_size`` pending events at a time, so under load a batch is
    everything that arrived while the previous one was scored (adaptive batching), and at low
    load it is the one event that just arrived. Batches go through a two-stage pipeline
    in arrival order (:meth:`_run`: Redis applies and recommendations in batch order, so
    per-user order holds); their deliveries overlap with the next batches, at most
    ``max_inflight`` at once, and each batch's events are acked only once delivered.
    ``put`` blocks while ``max_pending`` events wait (backpressure on the consumer).

    With ``idle_s``, ``on_idle`` runs every ``idle_s`` seconds while no event waits and no batch
    is in hand: the worker swaps to a model promoted during a quiet spell then
    (:meth:`Processor.maybe_swap`), not only when the next event arrives.
    """

    def __init__(self, proc: Processor, ack: Callable[[Any], Awaitable[Any]], batch_size: int, max_inflight: int,
                 max_pending: int, wait_s: float = 0.0, *, on_idle: Callable[[], None] | None = None,
                 idle_s: float = 1.0) -> None:  # fmt: skip
        self.proc = proc
        self.on_idle = on_idle
        self.idle_s = idle_s
        self.wait_s = wait_s  # a partial batch waits this long (from its first event) to fill
        self._first_t = 0.0
        self._full = asyncio.Event()
        self.ack = ack
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self._pending: list[Any] = []
        self._have = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._waiting = False  # the batch task waits for events, no batch in hand
        self._task = asyncio.ensure_future(self._run())
        self._ticker = asyncio.ensure_future(self._tick()) if on_idle is not None else None

    async def put_one(self, event: Any) -> None:
        """Queue one event (stamped with the time it was received); blocks while ``max_pending``
        events wait."""
        if self._task.done():  # the batch task died: surface it, so the supervisor restarts the agent
            self._task.result()
            raise RuntimeError("batch task ended")
        if not self._pending:
            self._first_t = time.monotonic()
        txn = self.proc.output.txn
        self._pending.append((event, time.time() * 1000, txn.epoch(event.message.partition) if txn else 0))
        self._have.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()
        if len(self._pending) >= self.max_pending:
            await self._wait_for_room()

    async def put(self, events: Sequence[Any]) -> None:
        """Queue several events at once (as :meth:`put_one` each)."""
        if self._task.done():
            self._task.result()
            raise RuntimeError("batch task ended")
        if not self._pending:
            self._first_t = time.monotonic()
        now = time.time() * 1000
        txn = self.proc.output.txn
        self._pending.extend((e, now, txn.epoch(e.message.partition) if txn else 0) for e in events)
        self._have.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()
        await self._wait_for_room()

    async def _wait_for_room(self) -> None:
        while len(self._pending) >= self.max_pending and not self._task.done():
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        """Under a backlog, two batches in flight: while batch N is scored in the scorer
        thread, batch N+1 (a full one) is parsed, applied to Redis and its inputs built on the
        event loop; then N is finished (recommendations, produce). Redis applies and
        recommendations stay in batch order. A batch whose fast path fails at any step is
        re-run whole by :meth:`Processor.process` (retries, backoff, poison isolation) before
        anything after it is applied."""
        prev: tuple[list[Any], list[RawRecord], Batch | None] | None = None
        while True:
            if prev is not None and (self._stopping or len(self._pending) < self.batch_size):
                # overlap only with a full batch: a partial one would only shrink the batches
                # (it grows while this one finishes), and with them the amortisation
                await self._complete(*prev)
                prev = None
                continue
            if self._stopping:
                break
            if prev is None:
                if not await self._wait_for_events():
                    continue
                linger = self._first_t + self.wait_s - time.monotonic()
                if linger > 0 and len(self._pending) < self.batch_size:
                    # up to B events or W after the first: a batch of a few events pays the
                    # whole per-batch cost (two Lua calls, a model run, a delivery), which
                    # near saturation costs more latency than the wait
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), linger)
            taken = self._take()
            txn = self.proc.output.txn
            if txn is not None:  # exactly-once: events of a partition revoked since they arrived are dropped
                live = [t for t in taken if txn.current(t[0].message.partition, t[2])]
                if len(live) < len(taken):
                    self.proc.metrics.revoked_events.inc(len(taken) - len(live))
                    taken = live
                    if not taken:
                        continue
            events = [e for e, _, _ in taken]
            records = [
                RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value,
                          int(e.message.timestamp * 1000), received, epoch)
                for e, received, epoch in taken
            ]  # fmt: skip
            try:
                prep: Batch | None = await self.proc.prepare(records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed_fast(records, exc)
                prep = None
            if prev is not None:
                await self._complete(*prev)
                prev = None
            if prep is None:
                await self._complete(events, records, None)
            else:
                prev = (events, records, prep)

    async def _wait_for_events(self) -> bool:
        """Wait for events (True when some are pending); meanwhile :meth:`_tick` may run
        ``on_idle``."""
        self._waiting = True
        try:
            await self._have.wait()
        finally:
            self._waiting = False
        return not self._stopping and bool(self._pending)

    async def _tick(self) -> None:
        """Every ``idle_s``, ``on_idle`` if the batch task is waiting for events with no batch in
        hand (a timer of its own, so the wait for events costs nothing more per batch)."""
        while not self._task.done():
            await asyncio.sleep(self.idle_s)
            if self._waiting and not self._have.is_set() and self.on_idle is not None:
                try:
                    self.on_idle()
                except Exception:  # the next tick (or batch) tries again
                    log.exception("idle tick failed")

    def _take(self) -> list[tuple[Any, float, int | None]]:
        events = self._pending[: self.batch_size]
        del self._pending[: self.batch_size]
        self._first_t = time.monotonic()  # leftovers (more than B were pending) start a new wait
        if len(self._pending) < self.batch_size:
            self._full.clear()
        if not self._pending:
            self._have.clear()
        if len(self._pending) < self.max_pending:
            self._room.set()
        return events

    async def _complete(self, events: list[Any], records: list[RawRecord], prep: Batch | None) -> None:
        out: Outbox | None = None
        if prep is not None:
            try:
                out = await self.proc.finish(prep)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed_fast(records, exc)
        if out is None:
            out = await self.proc.process(records)  # never raises except on cancellation
        t = asyncio.ensure_future(self._deliver_then_ack(out, events))
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)
        if len(self._inflight) >= self.max_inflight:  # a slow broker slows consumption
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)

    def _failed_fast(self, records: list[RawRecord], exc: Exception) -> None:
        """A failed attempt like any other (``attnrec_batch_retries_total``): the batch is re-run."""
        self.proc.metrics.retries.labels("transient" if isinstance(exc, TransientError) else "error").inc()
        log.warning("batch of %d (%s) failed on the fast path (%s: %s); re-running it on its own",
                    len(records), where(records), type(exc).__name__, exc)  # fmt: skip

    async def _deliver_then_ack(self, out: Outbox, events: list[Any]) -> None:
        if not await self.proc.output.deliver(out):
            return  # exactly-once: the partitions moved to another worker; it redoes these events
        for e in events:
            await self.ack(e)

    async def close(self) -> None:
        """Finish the batch in hand and its deliveries (a stop request, e.g. SIGTERM); events
        still pending stay unacked and are redelivered to whoever owns the partition next.
        Exits the process hard if that cannot happen within 30 s each."""
        self._stopping = True
        self._have.set()
        if self._ticker is not None:
            self._ticker.cancel()
        if not self._task.done():
            log.info("stop requested: finishing the batch in hand (%d more events pending stay unacked)", len(self._pending))
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
            except TimeoutError:
                log.error("batch did not finish within 30 s of stop; exiting without acking it")
                os._exit(3)
        if self._inflight:
            log.info("waiting for %d batches' deliveries before stopping", len(self._inflight))
            _, pending = await asyncio.wait(self._inflight, timeout=30)
            if pending:
                log.error("deliveries did not finish within 30 s of stop; exiting without acking them")
                os._exit(3)


async def feed(stream: Any, batcher: Batcher) -> None:
    """Hand every event of a faust agent's stream to ``batcher`` as it arrives, acks left to us
    (a batch's events are acked only once the broker has every record it produced)."""
    events = stream.noack()
    async for _value in events:
        await batcher.put_one(events.current_event)
