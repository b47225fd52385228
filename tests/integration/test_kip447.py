"""KIP-447 on the real broker (stream/core/kip447.py): the group coordinator refuses a
transactional offset commit from a generation the group has left, and a stable read of the
committed offsets waits for a transaction that commits them."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from attnrec.stream.core.kip447 import GroupFencedError, GroupMetadata, TransactionalProducer

from attnrec.kafka_util import ensure_topics
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


def _producer(bootstrap: str) -> TransactionalProducer:
    return TransactionalProducer(bootstrap_servers=bootstrap, transactional_id=f"t-{uuid.uuid4().hex[:8]}",
                                 enable_idempotence=True, acks="all")


async def _member(bootstrap: str, topic: str, group: str) -> tuple[AIOKafkaConsumer, GroupMetadata]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
                         isolation_level="read_committed")
    await c.start()
    for _ in range(150):
        if c.assignment():
            break
        await asyncio.sleep(0.1)
    assert c.assignment(), "the consumer never joined its group"
    coord = c._coordinator  # noqa: SLF001
    return c, GroupMetadata(group, coord.generation, coord.member_id)


@pytest.mark.timeout(120)
def test_a_stale_generation_is_refused_and_a_stable_read_waits_for_the_commit(stack: Any, names: dict[str, str],
                                                                               tmp_path: Any) -> None:
    s = settings_for(stack, names, tmp_path)
    ensure_topics(s)
    topic, group = s.clicks_topic, s.group_id
    tp = TopicPartition(topic, 0)

    async def run() -> dict[str, Any]:
        c, meta = await _member(stack.bootstrap, topic, group)
        p, reader = _producer(stack.bootstrap), _producer(stack.bootstrap)
        await p.start()
        await reader.start()
        seen: dict[str, Any] = {}
        try:
            await p.begin_transaction()
            await p.send(s.recs_topic, b"a")
            await p.send_offsets_to_transaction({tp: 5}, meta)
            await p.commit_transaction()
            seen["current"] = (await p.committed(group, topic, [0]))[0]

            # a member of an older generation (a zombie the group moved on from)
            await p.begin_transaction()
            await p.send(s.recs_topic, b"b")
            try:
                await p.send_offsets_to_transaction({tp: 6}, GroupMetadata(group, meta.generation_id - 1, meta.member_id))
                await p.commit_transaction()
                seen["stale"] = "accepted"
            except GroupFencedError:
                seen["stale"] = "refused"
                await p.abort_transaction()
            seen["after_stale"] = (await p.committed(group, topic, [0]))[0]

            # a transaction commits offset 7 a second after another client asks for it stable
            await p.begin_transaction()
            await p.send(s.recs_topic, b"c")
            await p.send_offsets_to_transaction({tp: 7}, meta)

            async def commit_later() -> float:
                await asyncio.sleep(1.0)
                await p.commit_transaction()
                return time.monotonic()

            t0 = time.monotonic()
            late = asyncio.ensure_future(commit_later())
            seen["stable"] = (await reader.committed(group, topic, [0], timeout_s=30))[0]
            seen["read_after_s"] = time.monotonic() - t0
            seen["committed_after_s"] = await late - t0
        finally:
            await p.stop()
            await reader.stop()
            await c.stop()
        return seen

    seen = asyncio.run(run())
    assert seen["current"] == 5
    assert seen["stale"] == "refused", seen
    assert seen["after_stale"] == 5, seen
    # the stable read answered with the committed transaction's offset, not the one before it
    assert seen["stable"] == 7, seen
    assert seen["read_after_s"] >= seen["committed_after_s"] - 0.05, seen
