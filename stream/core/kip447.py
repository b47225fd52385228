"""KIP-447 for aiokafka: transactional offset commits fenced by the consumer group's generation,
and committed offsets read stable (:class:`TransactionalProducer`).

aiokafka (pinned: pyproject) commits offsets in a transaction with TxnOffsetCommit v0, which
names the group only: the group coordinator cannot tell the partition's owner from a member
the group has moved on from. Since Kafka 2.5 (KIP-447):

- TxnOffsetCommit v3 carries the committing member's generation and member id, and the
  coordinator refuses a commit from an old generation (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID,
  FENCED_INSTANCE_ID): a zombie's transaction can only abort;
- OffsetFetch v7 can ask for stable offsets (``require_stable``): while a transaction that
  commits offsets of a partition is open, the coordinator answers UNSTABLE_OFFSET_COMMIT instead
  of the offset before it, so a partition's new owner never starts behind a commit in flight.

Both requests are built here with aiokafka's own protocol types (flexible versions). The
producer's sender is aiokafka's with one method replaced, ``_do_txn_offset_commit``, so that
:meth:`TransactionalProducer.send_offsets_to_transaction` commits with v3 and the given
:class:`GroupMetadata`; the integration tests hold it to the real broker (a zombie's commit is
refused: tests/integration/test_exactly_once.py).
"""

from __future__ import annotations

import asyncio
import collections
import logging
from dataclasses import dataclass
from typing import Any

import aiokafka.errors as Errors
from aiokafka import AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.producer.sender import BaseHandler, Sender
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import Boolean, CompactArray, CompactString, Int16, Int32, Int64, Schema, TaggedFields
from aiokafka.structs import TopicPartition

__all__ = ["GroupMetadata", "GroupFencedError", "TransactionalProducer", "UNSTABLE_OFFSET_COMMIT"]

log = logging.getLogger(__name__)

#: The coordinator's answer to a fetch of stable offsets while a transaction commits some.
UNSTABLE_OFFSET_COMMIT = 88
#: What a transactional offset commit from a member the group has moved on from gets.
_GROUP_FENCED = {22: "ILLEGAL_GENERATION", 25: "UNKNOWN_MEMBER_ID", 27: "REBALANCE_IN_PROGRESS", 82: "FENCED_INSTANCE_ID"}


@dataclass(frozen=True)
class GroupMetadata:
    """The consumer group member whose consumed offsets a transaction commits."""

    group_id: str
    generation_id: int = -1
    member_id: str = ""
    group_instance_id: str | None = None


class GroupFencedError(Errors.KafkaError):
    """The group coordinator refused a transactional offset commit: the member's generation is
    not the group's any more (its partitions are another member's, or about to be)."""

    retriable = False


# ---------------------------------------------------------------------------- TxnOffsetCommit v3
class TxnOffsetCommitResponse_v3(Response):
    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(("partition_index", Int32), ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )  # fmt: skip


class TxnOffsetCommitRequest_v3(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32), ("committed_offset", Int64), ("committed_leader_epoch", Int32),
                ("committed_metadata", CompactString("utf-8")), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("tags", TaggedFields),
    )  # fmt: skip


class TxnOffsetCommitRequestV3(Request[TxnOffsetCommitRequest_v3]):
    API_KEY = 28

    def __init__(self, transactional_id: str, producer_id: int, producer_epoch: int, group: GroupMetadata,
                 topics: list[tuple[str, list[tuple[int, int, str]]]]) -> None:  # fmt: skip
        self.args = (transactional_id, producer_id, producer_epoch, group, topics)

    def build(self, request_struct_class: type[TxnOffsetCommitRequest_v3]) -> TxnOffsetCommitRequest_v3:
        tid, pid, epoch, g, topics = self.args
        return request_struct_class(
            tid, g.group_id, pid, epoch, g.generation_id, g.member_id, g.group_instance_id,
            [(name, [(p, off, -1, meta, {}) for p, off, meta in parts], {}) for name, parts in topics], {})


# ---------------------------------------------------------------------------- OffsetFetch v7
class OffsetFetchResponse_v7(Response):
    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("topics", CompactArray(
            ("name", CompactString("utf-8")),
            ("partitions", CompactArray(
                ("partition_index", Int32), ("committed_offset", Int64), ("committed_leader_epoch", Int32),
                ("metadata", CompactString("utf-8")), ("error_code", Int16), ("tags", TaggedFields))),
            ("tags", TaggedFields))),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )  # fmt: skip


class OffsetFetchRequest_v7(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        ("topics", CompactArray(("name", CompactString("utf-8")), ("partition_indexes", CompactArray(Int32)),
                                ("tags", TaggedFields))),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )  # fmt: skip


class OffsetFetchRequestStable(Request[OffsetFetchRequest_v7]):
    API_KEY = 9

    def __init__(self, group_id: str, topic: str, partitions: list[int]) -> None:
        self.args = (group_id, topic, partitions)

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        group_id, topic, partitions = self.args
        return request_struct_class(group_id, [(topic, list(partitions), {})], True, {})


# ---------------------------------------------------------------------------- the producer
class _TxnOffsetCommitV3Handler(BaseHandler):
    """aiokafka's TxnOffsetCommitHandler with v3 and the group's metadata; a refusal for an old
    generation makes the transaction abortable (:class:`GroupFencedError`)."""

    group = BaseHandler.group

    def __init__(self, sender: Any, offsets: dict[TopicPartition, Any], group: GroupMetadata) -> None:
        super().__init__(sender)
        self._offsets = offsets
        self._meta = group

    def create_request(self) -> TxnOffsetCommitRequestV3:
        txn = self._sender._txn_manager
        data: dict[str, list[tuple[int, int, str]]] = collections.defaultdict(list)
        for tp, off in sorted(self._offsets.items()):
            data[tp.topic].append((tp.partition, off.offset, off.metadata))
        return TxnOffsetCommitRequestV3(txn.transactional_id, txn.producer_id, txn.producer_epoch, self._meta,
                                        list(data.items()))

    def handle_response(self, resp: Any) -> float | None:
        txn = self._sender._txn_manager
        for topic, partitions, _ in resp.topics:
            for partition, code, _ in partitions:
                tp = TopicPartition(topic, partition)
                error = Errors.for_code(code)
                if error is Errors.NoError:
                    txn.offset_committed(tp, self._offsets[tp].offset, self._meta.group_id)
                elif code in _GROUP_FENCED:
                    txn.error_transaction(GroupFencedError(
                        f"{_GROUP_FENCED[code]}: generation {self._meta.generation_id} of member {self._meta.member_id!r} "
                        f"may not commit {tp} for group {self._meta.group_id!r}"))
                    return None
                elif error in (Errors.CoordinatorNotAvailableError, Errors.NotCoordinatorError,
                               Errors.RequestTimedOutError):
                    self._sender._coordinator_dead(CoordinationType.GROUP)
                    return self._default_backoff  # type: ignore[no-any-return]
                elif error in (Errors.CoordinatorLoadInProgressError, Errors.UnknownTopicOrPartitionError,
                               Errors.ConcurrentTransactions):
                    return self._default_backoff  # type: ignore[no-any-return]
                elif error is Errors.InvalidProducerEpoch:
                    raise Errors.ProducerFenced()
                else:
                    txn.error_transaction(error())
                    return None
        return None

    def handle_error(self) -> float:
        self._sender._coordinator_dead(CoordinationType.GROUP)
        return self._default_backoff  # type: ignore[no-any-return]


class _Sender(Sender):  # type: ignore[misc]
    """aiokafka's sender, committing transactional offsets with :class:`_TxnOffsetCommitV3Handler`."""

    group_metadata: GroupMetadata | None = None

    async def _do_txn_offset_commit(self, offsets: dict[TopicPartition, Any], group_id: str) -> None:
        if not offsets:
            return
        meta = self.group_metadata
        if meta is None or meta.group_id != group_id:
            meta = GroupMetadata(group_id)
        try:
            node_id = await self._find_coordinator(CoordinationType.GROUP, group_id)
        except Errors.GroupAuthorizationFailedError as exc:
            self._txn_manager.error_transaction(exc)
            return
        await _TxnOffsetCommitV3Handler(self, offsets, meta).do(node_id)


class TransactionalProducer(AIOKafkaProducer):  # type: ignore[misc]
    """aiokafka's transactional producer with KIP-447: offsets committed with the consumer's
    group metadata, committed offsets read stable."""

    def __init__(self, **config: Any) -> None:
        super().__init__(**config)
        self._sender.__class__ = _Sender  # the same sender, with the v3 offset commit

    async def send_offsets_to_transaction(self, offsets: dict[TopicPartition, int], group: GroupMetadata) -> None:  # type: ignore[override]
        """Add ``offsets`` (the next offset to consume per partition) to the open transaction,
        committed as ``group``'s member: the coordinator refuses them if ``group.generation_id``
        is no longer the group's."""
        self._sender.group_metadata = group
        await super().send_offsets_to_transaction(offsets, group.group_id)

    async def committed(self, group_id: str, topic: str, partitions: list[int], *, timeout_s: float = 30.0,
                        retry_s: float = 0.05) -> dict[int, int]:  # fmt: skip
        """The group's committed offsets of ``partitions``, stable: while a transaction commits
        offsets of one of them, ask again (up to ``timeout_s``; then the error is raised).
        Partitions without a committed offset are left out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        client = self.client
        while True:
            node_id = await self._sender._find_coordinator(CoordinationType.GROUP, group_id)
            try:
                resp = await client.send(node_id, OffsetFetchRequestStable(group_id, topic, partitions))
            except (Errors.KafkaConnectionError, Errors.NodeNotReadyError, Errors.RequestTimedOutError):
                # the coordinator's broker is gone (killed, partitioned away): forget it, so the
                # next attempt asks the cluster for the group's new coordinator
                self._sender._coordinator_dead(CoordinationType.GROUP)
                raise
            out: dict[int, int] = {}
            codes = [resp.error_code] if resp.error_code else []
            for _, parts, _ in resp.topics:
                for partition, offset, _epoch, _meta, code, _ in parts:
                    if code:
                        codes.append(code)
                    elif offset >= 0:
                        out[partition] = offset
            if not codes:
                return out
            errors = [Errors.for_code(c) for c in codes]
            unstable = all(c == UNSTABLE_OFFSET_COMMIT or e.retriable for c, e in zip(codes, errors, strict=True))
            if loop.time() > deadline or not unstable:
                raise errors[0](f"committed offsets of group {group_id!r}: error codes {codes}")
            if any(e in (Errors.NotCoordinatorError, Errors.CoordinatorNotAvailableError) for e in errors):
                self._sender._coordinator_dead(CoordinationType.GROUP)
            await asyncio.sleep(retry_s)
