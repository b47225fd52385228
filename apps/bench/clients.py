"""The bench's own Kafka clients: librdkafka through confluent-kafka, for the load generator and
the recommendations reader.

The harness shares a 2-core box with what it measures, so every microsecond it spends per event
is taken from the worker, Kafka and Redis. With kafka-python's producer (paced by 1 ms sleeps)
and a polling kafka-python consumer, generator and reader took ~1.8 cores at 1,000 events/s
(~1,800 µs of CPU per event, docs/BENCHMARKS.md): most latencies were measured inside the
contention the harness made. librdkafka batches and does its network I/O in C threads, outside
the interpreter lock; what is left in Python is pacing, one ``produce`` call per event and the
accounting of each recommendation.

confluent-kafka is the ``bench`` extra (``pip install 'attnrec[bench]'``; ``make`` installs it):
the worker never needs it.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from attnrec.errors import ConfigError
from attnrec.settings import Settings

__all__ = ["rd_config", "rd_producer", "rd_consumer", "produce"]


def _confluent() -> Any:
    try:
        import confluent_kafka
    except ImportError:
        raise ConfigError("attnrec bench needs confluent-kafka (the bench extra): pip install 'attnrec[bench]'") from None
    return confluent_kafka


def rd_config(s: Settings) -> dict[str, Any]:
    """librdkafka's connection and security settings for ``s``."""
    conf: dict[str, Any] = {"bootstrap.servers": s.kafka_bootstrap,
                            "security.protocol": s.kafka_security_protocol.lower(),
                            "logger": logging.getLogger("librdkafka")}  # its log lines through logging, not stderr
    if s.kafka_security_protocol.startswith("SASL"):
        conf["sasl.mechanism"] = s.kafka_sasl_mechanism
        conf["sasl.username"] = s.kafka_username or ""
        conf["sasl.password"] = s.kafka_password.get_secret_value() if s.kafka_password else ""
    if s.kafka_ssl_cafile:
        conf["ssl.ca.location"] = str(s.kafka_ssl_cafile)
    return conf


def rd_producer(s: Settings, *, linger_ms: float = 1.0) -> Any:
    """A producer as the worker's users would run one (acks=all, idempotent), batching for
    ``linger_ms``; delivery reports only for errors (nothing per event in Python)."""
    ck = _confluent()
    return ck.Producer({**rd_config(s), "acks": "all", "enable.idempotence": True, "linger.ms": linger_ms,
                        "delivery.report.only.error": True, "queue.buffering.max.messages": 1_000_000})


def rd_consumer(s: Settings, *, fetch_wait_ms: int = 100) -> Any:
    """A consumer of the worker's output as the docs tell its users to read it: read committed,
    no group (partitions are assigned by hand), a fetch answered as soon as a record exists."""
    ck = _confluent()
    return ck.Consumer({**rd_config(s), "group.id": f"attnrec-bench-{uuid.uuid4().hex[:8]}",
                        "enable.auto.commit": False, "isolation.level": "read_committed",
                        "fetch.wait.max.ms": fetch_wait_ms, "fetch.min.bytes": 1, "auto.offset.reset": "latest",
                        "enable.partition.eof": False})


def produce(producer: Any, topic: str, key: bytes, value: bytes) -> None:
    """One record to librdkafka's queue; when the queue is full, serve it until there is room."""
    while True:
        try:
            producer.produce(topic, value, key)
            return
        except BufferError:
            producer.poll(0.05)
