"""The settings of the local stack (``attnrec stack``; the demo and the benchmark start it too)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from attnrec.settings import Settings

__all__ = ["StackSettings"]


class StackSettings(Settings):
    """The base settings plus where and how the local Kafka and Redis run."""

    sections: ClassVar[dict[str, str]] = {"kafka_port": "Local stack (`attnrec stack`, `attnrec demo`, `attnrec bench`)"}

    kafka_port: int = Field(9092, ge=1, le=65535, description="ATTNREC_KAFKA_PORT: local broker port (stack up)")
    kafka_controller_port: int = Field(9093, ge=1, le=65535, description="ATTNREC_KAFKA_CONTROLLER_PORT: local KRaft controller port")
    redis_port: int = Field(6379, ge=1, le=65535, description="ATTNREC_REDIS_PORT: local Redis port (stack up)")
    redis_appendfsync: Literal["everysec", "always"] = Field(
        "everysec", description="ATTNREC_REDIS_APPENDFSYNC: AOF fsync policy of the local stack's Redis (always survives a machine crash, ~12% slower)"
    )
    kafka_jit: Literal["full", "quick"] = Field(
        "full", description="ATTNREC_KAFKA_JIT: full: the JVM's optimising compiler, as a production broker runs (what the benchmark measures); quick: the first tier only, a faster start and ~2x the broker's CPU per request (the test suite's stacks; attnrec demo's default)"
    )
    brokers: int = Field(1, ge=1, le=9, description="ATTNREC_BROKERS: local Kafka brokers; more than one is a KRaft cluster (each node broker and controller, on KAFKA_PORT and KAFKA_CONTROLLER_PORT + 2 per node) with topics at replication factor 3 and min.insync.replicas=2")
    redis_cluster: bool = Field(False, description="ATTNREC_REDIS_CLUSTER: a local Redis Cluster of 3 masters and 3 replicas (on REDIS_PORT + 0..5, buses + 10000) instead of one Redis")
    kafka_heap: str | None = Field(None, pattern=r"^[0-9]+[kmgKMG]$", description="ATTNREC_KAFKA_HEAP: maximum heap of each local broker (-Xmx; default 768m for one broker, 512m each in a cluster)")
    kafka_home: Path | None = Field(None, description="ATTNREC_KAFKA_HOME (or KAFKA_HOME): use an installed Kafka")
    kafka_libs: Path = Field(
        Path.home() / ".cache" / "attnrec" / "kafka-libs", description="ATTNREC_KAFKA_LIBS: where Maven puts the Kafka jars the stack runs"
    )

    @model_validator(mode="before")
    @classmethod
    def _kafka_home(cls, data: Any) -> Any:
        """``KAFKA_HOME``, Kafka's own variable, when ``ATTNREC_KAFKA_HOME`` is not set."""
        if isinstance(data, dict) and data.get("kafka_home") is None and os.environ.get("KAFKA_HOME"):
            return {**data, "kafka_home": Path(os.environ["KAFKA_HOME"])}
        return data

    @property
    def stack_dir(self) -> Path:
        return self.home / "stack"
