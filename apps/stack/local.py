"""The local stack: Apache Kafka (KRaft) and Redis as background processes, on loopback.

One broker and one Redis by default; ``brokers=3`` and ``redis_cluster`` make it what production
runs on one box: a 3-broker Kafka cluster (replication 3, ``min.insync.replicas=2``) and a
Redis Cluster of 3 masters and 3 replicas. Data, logs and pid files live under
``<home>/stack``; ``up`` records the layout there (``layout.json``), so ``down`` and ``status``
find whatever is running. ``up`` and ``down`` are idempotent. Tests create their own
:class:`LocalStack` on free ports under a temporary directory.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .kafka_broker import KafkaBroker
from .redis_cluster import RedisClusterNodes
from .settings import StackSettings

__all__ = ["LocalStack", "local_stack", "cmd_stack"]


@dataclass
class LocalStack(KafkaBroker, RedisClusterNodes):
    """The local Kafka broker(s) + Redis server(s) with their files under ``root``."""

    root: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    # A Kafka cluster: ``brokers`` nodes, each broker and controller, on ``kafka_ports`` and
    # ``controller_ports`` (default: kafka_port / controller_port + 2 per node).
    brokers: int = 1
    kafka_ports: tuple[int, ...] = ()
    controller_ports: tuple[int, ...] = ()
    # A Redis Cluster (3 masters + 3 replicas) instead of one Redis, on ``redis_cluster_ports``
    # (default: redis_port + 0..5) with the cluster buses on ``redis_cluster_bus_ports``
    # (default: + 10000).
    redis_cluster: bool = False
    redis_cluster_ports: tuple[int, ...] = ()
    redis_cluster_bus_ports: tuple[int, ...] = ()
    redis_node_timeout_ms: int = 3000
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
        self._save_layout()
        self.start_redis()
        self.start_kafka()

    def down(self, *, kill: bool = False) -> None:
        """Stop everything (``kill``: SIGKILL at once, for throw-away stacks)."""
        self.stop_kafka(kill=kill)
        self.stop_redis(kill=kill)

    def heal(self) -> None:
        """After a fault: every server resumed (SIGCONT), started if it is down, and the Redis
        Cluster whole again (every slot served, every node known)."""
        import os
        import signal

        for name in [n.name for n in self.kafka_nodes] + [n.name for n in self.redis_nodes if self.redis_cluster]:
            pid = self._read_pid(name)
            if pid is not None:
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
        self.start_redis()
        self.start_kafka(timeout=120)
        if self.redis_cluster:
            self.wait_cluster_ok(90)

    def status(self) -> dict[str, dict[str, object]]:
        """Each server process: running, its address, pid and log (``kafka`` / ``redis`` for
        the single servers; ``kafka-1``.., ``redis-1``.. in a cluster)."""
        parts: list[tuple[str, bool, str]] = []
        for n in self.kafka_nodes:
            parts.append((n.name, self.broker_running(n.node_id), f"127.0.0.1:{n.port}"))
        if self.redis_cluster:
            parts += [(n.name, self.redis_node_running(n.port), f"127.0.0.1:{n.port}") for n in self.redis_nodes]
        else:
            parts.append(("redis", self.redis_running(), f"127.0.0.1:{self.redis_port}"))
        out: dict[str, dict[str, object]] = {}
        for name, running, where in parts:
            out[name] = {"running": running, "address": where, "pid": self._read_pid(name) if running else None,
                         "log": str(self.root / f"{name}.log")}  # fmt: skip
        return out

    # ---------------------------------------------------------------- layout
    _LAYOUT = ("brokers", "kafka_ports", "controller_ports", "redis_cluster", "redis_cluster_ports",
               "redis_cluster_bus_ports")  # fmt: skip

    def _save_layout(self) -> None:
        layout = {k: getattr(self, k) for k in self._LAYOUT}
        layout["kafka_ports"] = [n.port for n in self.kafka_nodes]
        layout["controller_ports"] = [n.controller_port for n in self.kafka_nodes]
        if self.redis_cluster:
            layout["redis_cluster_ports"] = [n.port for n in self.redis_nodes]
            layout["redis_cluster_bus_ports"] = [n.bus_port for n in self.redis_nodes]
        (self.root / "layout.json").write_text(json.dumps(layout))

    def with_saved_layout(self) -> LocalStack:
        """This stack with the layout its last ``up`` recorded under ``root`` (if any): how
        ``down`` and ``status`` find a cluster they were not told about."""
        path = self.root / "layout.json"
        if not path.is_file():
            return self
        saved = json.loads(path.read_text())
        if int(saved.get("brokers", 1)) > 1:
            self.brokers = int(saved["brokers"])
            self.kafka_ports = tuple(saved["kafka_ports"])
            self.controller_ports = tuple(saved["controller_ports"])
        if saved.get("redis_cluster"):
            self.redis_cluster = True
            self.redis_cluster_ports = tuple(saved["redis_cluster_ports"])
            self.redis_cluster_bus_ports = tuple(saved["redis_cluster_bus_ports"])
        return self


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
        brokers=s.brokers,
        redis_cluster=s.redis_cluster,
        kafka_heap=s.kafka_heap or ("768m" if s.brokers == 1 else "512m"),
    )


def cmd_stack(s: StackSettings, args: Any) -> int:
    """``attnrec stack up|down|status``; status exits 3 when a part is not running."""
    st = local_stack(s)
    if args.action == "up":
        st.up()
        print(f"kafka  {st.bootstrap}\nredis  {st.redis_url.split('@')[-1]}\ndata   {st.root}")
        return 0
    st = st.with_saved_layout()  # down and status: whatever the last up started
    if args.action == "down":
        st.down()
        print("stack stopped")
    else:
        status = st.status()
        for name, info in status.items():
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            print(f"{name:7} {state:22} {info['address']:22} log {info['log']}")
        return 0 if all(i["running"] for i in status.values()) else 3
    return 0
