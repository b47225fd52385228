"""Kafka connection settings for every client we use, and small kafka-python helpers.

The security options (TLS, SASL) are derived from :class:`Settings` here and only here, in
the form each client library takes: kafka-python (replay, trainer, dashboard, bench, tests),
aiokafka (the worker's producer) and faust (the worker's consumer). The helpers below create
topics and plain producers/consumers with kafka-python; the worker itself talks to Kafka
through faust/aiokafka.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from attnrec.errors import TransientError
from attnrec.settings import Settings

__all__ = ["kafka_python_security", "aiokafka_security", "faust_credentials", "ensure_topics", "make_producer",
           "make_consumer", "admin_client", "committed_offsets"]

log = logging.getLogger(__name__)


def _sasl(s: Settings) -> dict[str, Any]:
    kw: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    if s.kafka_security_protocol.startswith("SASL"):
        kw["sasl_mechanism"] = s.kafka_sasl_mechanism
        kw["sasl_plain_username"] = s.kafka_username
        kw["sasl_plain_password"] = s.kafka_password.get_secret_value() if s.kafka_password else ""
    return kw


def _ssl_context(s: Settings) -> Any:
    import ssl

    return ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)


def kafka_python_security(s: Settings) -> dict[str, Any]:
    """Security keyword arguments for kafka-python clients."""
    kw = _sasl(s)
    if s.kafka_ssl_cafile:
        kw["ssl_cafile"] = str(s.kafka_ssl_cafile)
    return kw


def aiokafka_security(s: Settings) -> dict[str, Any]:
    """Security keyword arguments for aiokafka clients (TLS through an ``ssl_context``)."""
    kw = _sasl(s)
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        kw["ssl_context"] = _ssl_context(s)
    return kw


def faust_credentials(s: Settings) -> Any:
    """faust's ``broker_credentials`` for these settings (None for PLAINTEXT)."""
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    import faust

    ssl_ctx = _ssl_context(s) if s.kafka_security_protocol in ("SSL", "SASL_SSL") else None
    if s.kafka_security_protocol.startswith("SASL"):
        pw = s.kafka_password.get_secret_value() if s.kafka_password else ""
        if s.kafka_sasl_mechanism == "PLAIN":
            return faust.SASLCredentials(username=s.kafka_username, password=pw, ssl_context=ssl_ctx)
        from faust.types.auth import SASLMechanism

        mech = SASLMechanism.SCRAM_SHA_256 if s.kafka_sasl_mechanism == "SCRAM-SHA-256" else SASLMechanism.SCRAM_SHA_512
        return faust.SASLCredentials(username=s.kafka_username, password=pw, ssl_context=ssl_ctx, mechanism=mech)
    return faust.SSLCredentials(ssl_ctx)


def admin_client(s: Settings, timeout_s: float = 30.0) -> KafkaAdminClient:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return KafkaAdminClient(bootstrap_servers=s.kafka_bootstrap, request_timeout_ms=10000, **kafka_python_security(s))
        except Exception as exc:
            if time.monotonic() > deadline:
                raise TransientError(f"kafka at {s.kafka_bootstrap} does not answer: {exc}") from exc
            time.sleep(0.5)


T = TypeVar("T")


def _retrying(s: Settings, what: str, call: Callable[[], T], timeout_s: float = 30.0) -> T:
    """``call()``, again while it fails with a retriable Kafka error (up to ``timeout_s``): the
    admin client asks one broker, and with a broker of a cluster down it may pick that one
    (connection refused); the next try picks another."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return call()
        except KafkaError as exc:
            if not getattr(exc, "retriable", False):
                raise
            if time.monotonic() > deadline:
                raise TransientError(f"kafka {s.kafka_bootstrap}: {what}: {type(exc).__name__}: {exc}") from exc
            log.info("kafka %s: %s failed (%s), trying again", s.kafka_bootstrap, what, type(exc).__name__)
            time.sleep(0.5)


def ensure_topics(s: Settings, names: Iterable[str] | None = None, partitions: int | None = None,
                  ready_timeout_s: float = 60.0, configs: dict[str, str] | None = None) -> None:  # fmt: skip
    """Create the product's topics when missing (idempotent), then wait until the broker
    describes every partition of each with a leader. Replicas: ``REPLICATION_FACTOR``, else the
    brokers' ``default.replication.factor`` (-1 in the request: Kafka >= 2.4). ``configs`` are
    topic configs of the topics created here (e.g. the benchmark's
    ``message.timestamp.type=LogAppendTime``; ``MIN_INSYNC_REPLICAS`` adds ``min.insync.replicas``).

    The wait matters: faust subscribes once at start-up, and a topic missing from its first
    metadata is ignored for good ("Ignoring missing topic"), leaving a worker that never gets
    a partition. A broker under load published a just-created topic's metadata seconds late.
    """
    names = list(names or (s.clicks_topic, s.recs_topic, s.dlq_topic, s.updates_topic, *([s.catalog_topic] if s.catalog else [])))
    n = partitions or s.partitions
    admin = admin_client(s)
    try:
        existing = set(_retrying(s, "listing topics", admin.list_topics))
        topic_configs = dict(configs or {})
        if s.min_insync_replicas:
            topic_configs.setdefault("min.insync.replicas", str(s.min_insync_replicas))
        new = [NewTopic(t, num_partitions=(1 if t == s.updates_topic else n), replication_factor=s.replication_factor or -1,
                        topic_configs=topic_configs) for t in names if t not in existing]
        if new:
            try:
                admin.create_topics(new)
                log.info("created topics %s", ", ".join(t.name for t in new))
            except TopicAlreadyExistsError:
                pass
        deadline = time.monotonic() + ready_timeout_s
        while True:
            described = _retrying(s, "describing topics", lambda: admin.describe_topics(names))
            pending = [t["name"] for t in described if not _topic_ready(t)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise TransientError(f"kafka {s.kafka_bootstrap}: topics {', '.join(pending)} have no leader "
                                     f"for every partition after {ready_timeout_s:.0f} s")  # fmt: skip
            time.sleep(0.2)
    finally:
        admin.close()


def committed_offsets(s: Settings, group_id: str, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """The consumer group's committed offset per partition of ``topic`` (empty: none yet).
    Retriable broker errors (the group coordinator still loading, as on a fresh broker) are
    retried for up to ``timeout_s``, then raised as :class:`TransientError`."""
    deadline = time.monotonic() + timeout_s
    admin = admin_client(s)
    try:
        while True:
            try:
                got = admin.list_group_offsets({group_id: None}).get(group_id, {})
                break
            except KafkaError as exc:
                if not getattr(exc, "retriable", False) or time.monotonic() > deadline:
                    raise TransientError(f"kafka {s.kafka_bootstrap}: committed offsets of group {group_id}: "
                                         f"{type(exc).__name__}: {exc}") from exc  # fmt: skip
            time.sleep(0.2)
    finally:
        admin.close()
    return {tp.partition: meta.offset for tp, meta in got.items() if tp.topic == topic and meta.offset >= 0}


def _topic_ready(desc: dict[str, Any]) -> bool:
    parts = desc.get("partitions") or []
    return desc.get("error_code") == 0 and bool(parts) and all(p.get("error_code") == 0 and p.get("leader_id", -1) >= 0 for p in parts)


def make_producer(s: Settings, **kw: Any) -> KafkaProducer:
    opts: dict[str, Any] = dict(
        bootstrap_servers=s.kafka_bootstrap,
        acks="all",
        linger_ms=5,
        batch_size=256 * 1024,
        max_in_flight_requests_per_connection=5,
        retries=10,
        **kafka_python_security(s),
    )
    opts.update(kw)
    return KafkaProducer(**opts)


def make_consumer(s: Settings, *topics: str, group_id: str | None = None, **kw: Any) -> KafkaConsumer:
    opts: dict[str, Any] = dict(
        bootstrap_servers=s.kafka_bootstrap,
        group_id=group_id,
        auto_offset_reset="earliest",
        enable_auto_commit=group_id is not None,
        # records of aborted transactions (an exactly-once worker's failed batches) are never seen
        isolation_level="read_committed",
        consumer_timeout_ms=1000,
        **kafka_python_security(s),
    )
    opts.update(kw)
    return KafkaConsumer(*topics, **opts)
