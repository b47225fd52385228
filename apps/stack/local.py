"""The local stack: single-node Apache Kafka (KRaft) and Redis as background processes.

Data, logs and pid files live under ``<home>/stack``. ``up`` and ``down`` are idempotent.
Tests create their own :class:`LocalStack` on free ports under a temporary directory.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kafka_broker import KafkaBroker
from .redis_server import RedisServer
from .settings import StackSettings

__all__ = ["LocalStack", "local_stack", "cmd_stack"]


@dataclass
class LocalStack(KafkaBroker, RedisServer):
    """One local Kafka broker + Redis server with their files under ``root``."""

    root: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_home: Path | None = None
    kafka_libs: Path = field(default_factory=lambda: Path.home() / ".cache" / "attnrec" / "kafka-libs")
    redis_password: str | None = field(default=None, repr=False)
    kafka_heap: str = "768m"
    kafka_jit: str = "full"  # "quick": the JVM's first tier only (starts faster, runs slower: tests)
    redis_appendfsync: str = "everysec"
    # Optional SASL_PLAINTEXT listener beside the PLAINTEXT one (which the broker keeps for
    # itself and for the stack's own health checks). ``sasl_users`` maps user -> password;
    # every user can log in with each of ``sasl_mechanisms`` (SCRAM credentials are written
    # into the metadata log when the storage is formatted, so they need a fresh data dir).
    sasl_port: int | None = None
    sasl_users: dict[str, str] = field(default_factory=dict, repr=False)
    sasl_mechanisms: tuple[str, ...] = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
    # Optional SASL_SSL listener (same users and mechanisms, over TLS). ``ssl_keystore`` is one
    # PEM file holding the server's unencrypted PKCS#8 private key and its certificate chain.
    sasl_ssl_port: int | None = None
    ssl_keystore: Path | None = None
    _procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    # ---------------------------------------------------------------- both
    def up(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.start_redis()
        self.start_kafka()

    def down(self) -> None:
        self.stop_kafka()
        self.stop_redis()

    def status(self) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, running, where in (
            ("kafka", self.kafka_running(), self.bootstrap),
            ("redis", self.redis_running(), f"127.0.0.1:{self.redis_port}"),
        ):
            out[name] = {"running": running, "address": where, "pid": self._read_pid(name) if running else None,
                         "log": str(self.root / f"{name}.log")}  # fmt: skip
        return out


def local_stack(s: StackSettings) -> LocalStack:
    """The local stack these settings describe (under HOME/stack, on the configured ports)."""
    return LocalStack(
        s.stack_dir,
        kafka_port=s.kafka_port,
        controller_port=s.kafka_controller_port,
        redis_port=s.redis_port,
        kafka_home=s.kafka_home,
        kafka_libs=s.kafka_libs,
        redis_password=s.redis_password.get_secret_value() if s.redis_password else None,
        redis_appendfsync=s.redis_appendfsync,
        kafka_jit=s.kafka_jit,
    )


def cmd_stack(s: StackSettings, args: Any) -> int:
    """``attnrec stack up|down|status``; status exits 3 when a part is not running."""
    st = local_stack(s)
    if args.action == "up":
        st.up()
        print(f"kafka  {st.bootstrap}\nredis  {st.redis_url.split('@')[-1]}\ndata   {st.root}")
    elif args.action == "down":
        st.down()
        print("stack stopped")
    else:
        status = st.status()
        for name, info in status.items():
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            print(f"{name:6} {state:22} {info['address']:22} log {info['log']}")
        return 0 if all(i["running"] for i in status.values()) else 3
    return 0
