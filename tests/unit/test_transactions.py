"""Exactly-once bookkeeping without a broker: assignment epochs (which batches may still commit),
what an Outbox records of its input partitions, and which of its records a transaction produces.
The transactions themselves run against the real broker in tests/integration/test_exactly_once.py."""

from __future__ import annotations

from attnrec.stream.core.output import Outbox
from attnrec.stream.core.records import RawRecord
from attnrec.stream.core.transactions import Transactions

from attnrec.settings import Settings


def test_one_transactional_id_per_worker_process() -> None:
    a, b = Transactions(Settings(group_id="g", clicks_topic="clicks")), Transactions(Settings(group_id="g", clicks_topic="clicks"))
    assert a.transactional_id.startswith("g-clicks-") and a.transactional_id != b.transactional_id


def test_a_batch_commits_only_in_the_epoch_its_events_arrived_in() -> None:
    txn = Transactions(Settings(group_id="g", clicks_topic="clicks"))
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


def test_an_outbox_records_each_partitions_offsets_and_epoch() -> None:
    recs = [RawRecord("clicks", 1, 10, b"k", b"v", epoch=3), RawRecord("clicks", 2, 7, b"k", b"v", epoch=4),
            RawRecord("clicks", 1, 12, b"k", b"v", epoch=3)]  # fmt: skip
    out = Outbox().cover(recs)
    assert out.offsets == {1: 13, 2: 8} and out.starts == {1: 10, 2: 7} and out.epochs == {1: 3, 2: 4}
    mixed = Outbox().cover([RawRecord("clicks", 1, 10, b"k", b"v", epoch=3), RawRecord("clicks", 1, 11, b"k", b"v", epoch=4)])
    assert mixed.epochs == {1: None}, "events of two epochs in one part: it can never commit"


def test_a_transaction_produces_neither_void_parts_nor_what_the_previous_owner_finished() -> None:
    out = Outbox(deferred=True)
    out.records = [("recs", b"u", b"{}", None, 1, 10), ("recs", b"u", b"{}", None, 1, 14), ("recs", b"u", b"{}", None, 2, 7),
                   ("clicks.dlq", b"u", b"{}", None, 1, 11)]  # fmt: skip
    out.void.add(2)  # partition 2 moved to another worker
    out.floors[1] = 12  # partition 1's previous owner committed up to offset 12 after we fetched
    assert [(r[4], r[5]) for r in out.live()] == [(1, 14)]


def test_no_group_metadata_while_the_consumer_rejoins() -> None:
    """A consumer that found itself dropped (a zombie's first heartbeat) resets its generation to
    -1; the coordinator would accept a transactional commit without one, so none is made."""
    from types import SimpleNamespace

    import pytest
    from attnrec.stream.app import group_metadata
    from attnrec.stream.core.kip447 import GroupFencedError

    def app(generation: int, member: str) -> SimpleNamespace:
        coordinator = SimpleNamespace(generation=generation, member_id=member)
        consumer = SimpleNamespace(_coordinator=coordinator)
        return SimpleNamespace(consumer=SimpleNamespace(_thread=SimpleNamespace(_ensure_consumer=lambda: consumer)))

    s = Settings(group_id="g", clicks_topic="clicks")
    meta = group_metadata(app(3, "m-1"), s)  # type: ignore[arg-type]
    assert (meta.group_id, meta.generation_id, meta.member_id) == ("g", 3, "m-1")
    for generation, member in ((-1, "m-1"), (3, "")):
        with pytest.raises(GroupFencedError, match="rejoins"):
            group_metadata(app(generation, member), s)  # type: ignore[arg-type]
