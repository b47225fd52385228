"""The worker's batch pipeline (``attnrec.stream.core.batcher.Batcher``) with a recording stand-in for the
Processor: the orchestration only — order of Redis applies and of recommendations, the
fallback to the whole-batch path, acks only after delivery, what a stop leaves unacked.
The real Processor runs against Kafka and Redis in tests/integration (pipeline, faults)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from attnrec.stream.core.batcher import Batcher
from attnrec.stream.core.metrics import WorkerMetrics
from attnrec.stream.core.output import Outbox


@dataclass
class Msg:
    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    timestamp: float = 0.0


@dataclass
class Ev:
    message: Msg


def events(lo: int, hi: int) -> list[Ev]:
    return [Ev(Msg("clicks", 0, i, b"u", b"{}")) for i in range(lo, hi)]


class FakeProcessor:
    """Records every step as (step, first offset of the batch); can fail chosen steps once."""

    def __init__(self, fail: set[tuple[str, int]] | None = None, slow_scoring: float = 0.0) -> None:
        self.log: list[tuple[str, int]] = []
        self.fail = set(fail or ())
        self.slow_scoring = slow_scoring
        self.txn: Any = None
        self.output = self  # delivery (and exactly-once, the transactions) are the output's
        self.metrics = WorkerMetrics()

    def _step(self, step: str, records: Any) -> None:
        first = records[0].offset
        self.log.append((step, first))
        if (step, first) in self.fail:
            self.fail.discard((step, first))
            raise RuntimeError(f"{step} failed")

    async def prepare(self, records: Any) -> Any:
        self._step("apply", records)
        await asyncio.sleep(0)
        return records

    async def finish(self, prep: Any) -> Outbox:
        await asyncio.sleep(self.slow_scoring)  # the model run in the scorer thread
        self._step("recs", prep)
        return Outbox()

    async def process(self, records: Any) -> Outbox:  # the whole-batch path with retries
        self.log.append(("process", records[0].offset))
        return Outbox()

    async def deliver(self, out: Outbox) -> bool:
        await asyncio.sleep(0)
        return True


def run_batcher(proc: FakeProcessor, batches: list[list[Ev]], batch_size: int, *, stop_early: bool = False
                ) -> list[int]:  # fmt: skip
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def main() -> None:
        b = Batcher(proc, ack, batch_size, max_inflight=4, max_pending=10_000)  # type: ignore[arg-type]
        for evs in batches:
            await b.put(evs)
        if stop_early:
            while not proc.log:  # a batch is in hand (applied, being scored) when the stop comes
                await asyncio.sleep(0.001)
        else:
            while b._pending or len(acked) < sum(len(x) for x in batches):
                await asyncio.sleep(0.01)
        await b.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    return acked


def test_a_backlog_overlaps_the_next_apply_with_scoring_but_keeps_batch_order() -> None:
    proc = FakeProcessor(slow_scoring=0.01)
    acked = run_batcher(proc, [events(0, 40)], batch_size=10)
    applies = [o for s, o in proc.log if s == "apply"]
    recs = [o for s, o in proc.log if s == "recs"]
    assert applies == recs == [0, 10, 20, 30], "Redis applies and recommendations in batch order"
    # batch 10 is applied before batch 0's recommendations: the overlap
    assert proc.log.index(("apply", 10)) < proc.log.index(("recs", 0))
    assert sorted(acked) == list(range(40))


def test_a_partial_next_batch_waits_instead_of_overlapping() -> None:
    proc = FakeProcessor()
    run_batcher(proc, [events(0, 10), events(10, 13)], batch_size=10)
    assert proc.log.index(("recs", 0)) < proc.log.index(("apply", 10))


def test_a_failed_finish_is_rerun_whole_before_the_next_batch_finishes() -> None:
    proc = FakeProcessor(fail={("recs", 10)})
    acked = run_batcher(proc, [events(0, 30)], batch_size=10)
    assert ("process", 10) in proc.log
    assert proc.log.index(("process", 10)) < proc.log.index(("recs", 20)), "recommendations stay in batch order"
    assert sorted(acked) == list(range(30)), "every event acked once, after its batch was delivered"
    assert proc.metrics.retries.labels("error")._value.get() == 1, "the failed attempt is counted"  # noqa: SLF001


def test_a_failed_apply_is_rerun_whole_before_anything_after_it_is_applied() -> None:
    proc = FakeProcessor(fail={("apply", 10)})
    acked = run_batcher(proc, [events(0, 30)], batch_size=10)
    i = proc.log.index(("process", 10))
    assert proc.log.index(("recs", 0)) < i < proc.log.index(("apply", 20)), proc.log
    assert sorted(acked) == list(range(30))
    assert proc.metrics.retries.labels("error")._value.get() == 1, "the failed attempt is counted"  # noqa: SLF001


def test_stop_finishes_the_batches_in_hand_and_leaves_the_rest_unacked() -> None:
    proc = FakeProcessor(slow_scoring=0.05)
    acked = run_batcher(proc, [events(0, 100)], batch_size=10, stop_early=True)
    done = {o for s, o in proc.log if s == "recs"}
    assert done, "the batch in hand was finished"
    assert sorted(acked) == [i for b in sorted(done) for i in range(b, b + 10)], "acked = exactly the finished batches"
    assert len(acked) < 100, "pending events were left for redelivery"


class FakeTxn:
    """Exactly-once ownership: partition -> current assignment epoch."""

    def __init__(self) -> None:
        self.epochs = {0: 1}

    def epoch(self, partition: int) -> int | None:
        return self.epochs.get(partition)

    def current(self, partition: int, epoch: int | None) -> bool:
        return epoch is not None and self.epochs.get(partition) == epoch


def test_events_of_a_partition_revoked_since_they_arrived_are_dropped_not_processed() -> None:
    proc = FakeProcessor()
    proc.txn = FakeTxn()
    dropped: list[int] = []
    proc.metrics = SimpleNamespace(revoked_events=SimpleNamespace(inc=dropped.append))  # type: ignore[attr-defined]
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def main() -> None:
        b = Batcher(proc, ack, 10, max_inflight=4, max_pending=10_000)  # type: ignore[arg-type]
        await b.put(events(0, 30))  # received in epoch 1 ...
        proc.txn.epochs[0] = 2  # ... then a rebalance took partition 0 away and gave it back
        await b.put(events(30, 40))
        while len(acked) < 10:
            await asyncio.sleep(0.01)
        await b.close()

    asyncio.run(asyncio.wait_for(main(), 10))
    assert sum(dropped) == 30, "the events of the old epoch are the partition's next owner's to read again"
    assert sorted(acked) == list(range(30, 40))
    assert [o for s, o in proc.log if s == "apply"] == [30]


def test_a_quiet_worker_runs_the_idle_tick_between_batches_only() -> None:
    """A model promoted while no event arrives is swapped in on the idle tick (a worker that
    swapped only at its next batch kept serving, and reporting, the old version); never while a
    batch is in hand."""
    proc = FakeProcessor(slow_scoring=0.05)
    ticks: list[list[tuple[str, int]]] = []
    acked: list[int] = []

    async def ack(e: Ev) -> None:
        acked.append(e.message.offset)

    async def main() -> None:
        b = Batcher(proc, ack, 10, max_inflight=4, max_pending=10_000,  # type: ignore[arg-type]
                    on_idle=lambda: ticks.append(list(proc.log)), idle_s=0.01)
        await asyncio.sleep(0.1)  # no traffic at all
        quiet = len(ticks)
        await b.put(events(0, 20))
        while len(acked) < 20:
            await asyncio.sleep(0.005)
        await asyncio.sleep(0.1)
        await b.close()
        assert quiet >= 3, "ticks while no event ever came"

    asyncio.run(asyncio.wait_for(main(), 10))
    assert len(ticks) >= 6
    for seen in ticks:  # at every tick each applied batch was finished: none in hand
        assert [o for s, o in seen if s == "apply"] == [o for s, o in seen if s == "recs"], seen
    assert sorted(acked) == list(range(20))
