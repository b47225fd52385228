"""Exactly-once bookkeeping without a broker: assignment epochs (which batches may still commit)
and what an Outbox records of its input partitions. The transactions themselves run against
the real broker in tests/integration/test_exactly_once.py."""

from __future__ import annotations

import asyncio

import pytest
from attnrec.stream.core.output import Outbox
from attnrec.stream.core.records import RawRecord
from attnrec.stream.core.transactions import TransactionalSender

from attnrec.settings import Settings


@pytest.fixture
def txn(monkeypatch: pytest.MonkeyPatch) -> TransactionalSender:
    async def no_producers(self: TransactionalSender, starting: list[int], stopping: list[int]) -> None:
        return None

    monkeypatch.setattr(TransactionalSender, "_warm", no_producers)  # no broker here
    return TransactionalSender(Settings(group_id="g", clicks_topic="clicks"))


def test_transactional_ids_are_per_input_partition(txn: TransactionalSender) -> None:
    assert txn.transactional_id(3) == "g-clicks-3" != txn.transactional_id(4)


def test_a_batch_commits_only_in_the_epoch_its_events_arrived_in(txn: TransactionalSender) -> None:
    async def main() -> None:
        assert txn.epoch(5) == 0, "before the first assignment every partition is ours"
        txn.assigned([0, 1])
        e0, e1 = txn.epoch(0), txn.epoch(1)
        assert e0 is not None and e1 is not None and txn.epoch(2) is None
        txn.assigned([0, 1, 2])  # partition 2 added, 0 and 1 kept: their batches stay valid
        assert (txn.epoch(0), txn.epoch(1)) == (e0, e1) and txn.epoch(2) is not None
        txn.revoked([0, 1, 2])  # an eager rebalance revokes everything ...
        assert not txn.current(0, e0) and txn.epoch(0) is None
        txn.assigned([0])  # ... and gives partition 0 back: a new epoch, the old batches stay void
        assert txn.epoch(0) not in (None, e0) and not txn.current(0, e0)
        e = txn.epoch(0)
        txn.lost(0, e)  # another worker processed it meanwhile (we were a zombie)
        assert txn.epoch(0) is None and not txn.current(0, e)
        txn.assigned([0])
        assert txn.epoch(0) is not None

    asyncio.run(main())


def test_an_outbox_records_each_partitions_offsets_and_epoch() -> None:
    recs = [RawRecord("clicks", 1, 10, b"k", b"v", epoch=3), RawRecord("clicks", 2, 7, b"k", b"v", epoch=4),
            RawRecord("clicks", 1, 12, b"k", b"v", epoch=3)]  # fmt: skip
    out = Outbox().cover(recs)
    assert out.offsets == {1: 13, 2: 8} and out.starts == {1: 10, 2: 7} and out.epochs == {1: 3, 2: 4}
    mixed = Outbox().cover([RawRecord("clicks", 1, 10, b"k", b"v", epoch=3), RawRecord("clicks", 1, 11, b"k", b"v", epoch=4)])
    assert mixed.epochs == {1: None}, "events of two epochs in one part: it can never commit"


def test_a_void_partitions_records_are_not_sent() -> None:
    sent: list[int | None] = []

    async def send(topic: str, key: bytes | None, value: bytes, headers: object, partition: int | None) -> asyncio.Future[None]:
        sent.append(partition)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def main() -> None:
        out = Outbox()
        out.void.add(2)
        await out.send(send, "recs", b"u", b"{}", partition=1)
        await out.send(send, "recs", b"u", b"{}", partition=2)
        assert out.indices(1) == [0] and out.indices(2) == []

    asyncio.run(main())
    assert sent == [1]
