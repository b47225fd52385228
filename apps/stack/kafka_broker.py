"""The local stack's Kafka in KRaft mode, its jars resolved from Maven Central with
``deploy/kafka/pom.xml`` (or taken from ``$KAFKA_HOME/libs``): one broker that is its own
controller, with optional SASL_PLAINTEXT and SASL_SSL listeners beside the PLAINTEXT one; or
a cluster of ``brokers`` nodes, each broker and controller (a quorum of all of them), with the
replication a production cluster has: topics at replication factor 3 (``default.replication
.factor``), ``min.insync.replicas=2``, the offsets and transaction state logs replicated 3
times. Each node can be stopped, killed, paused and started on its own (the fault tests)."""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path
from typing import NamedTuple

from attnrec.errors import ConfigError, StackError

from .processes import REPO_ROOT, Processes, pid_alive, port_open

__all__ = ["KafkaBroker", "KafkaNode"]

log = logging.getLogger(__name__)

_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.xml"


class KafkaNode(NamedTuple):
    """One broker of the local Kafka: its node id, its name (pid file, data directory, log) and
    its two ports."""

    node_id: int
    name: str
    port: int
    controller_port: int


class KafkaBroker(Processes):
    """The Kafka half of :class:`~attnrec.apps.stack.local.LocalStack` (its fields are there)."""

    kafka_port: int
    controller_port: int
    brokers: int
    kafka_ports: tuple[int, ...]
    controller_ports: tuple[int, ...]
    kafka_home: Path | None
    kafka_libs: Path
    kafka_heap: str
    kafka_jit: str
    sasl_port: int | None
    sasl_users: dict[str, str]
    sasl_mechanisms: tuple[str, ...]
    sasl_ssl_port: int | None
    ssl_keystore: Path | None

    @property
    def kafka_nodes(self) -> list[KafkaNode]:
        """The brokers: ``kafka`` alone, or ``kafka-1`` .. ``kafka-N`` on ``kafka_ports`` /
        ``controller_ports`` (default: ``kafka_port`` and ``controller_port`` + 2 per node)."""
        if self.brokers == 1:
            return [KafkaNode(1, "kafka", self.kafka_port, self.controller_port)]
        ports = self.kafka_ports or tuple(self.kafka_port + 2 * i for i in range(self.brokers))
        cports = self.controller_ports or tuple(self.controller_port + 2 * i for i in range(self.brokers))
        if len(ports) != self.brokers or len(cports) != self.brokers:
            raise ConfigError(f"{self.brokers} brokers need {self.brokers} broker and controller ports")
        return [KafkaNode(i + 1, f"kafka-{i + 1}", ports[i], cports[i]) for i in range(self.brokers)]

    def kafka_node(self, node_id: int) -> KafkaNode:
        for n in self.kafka_nodes:
            if n.node_id == node_id:
                return n
        raise ConfigError(f"no broker with node id {node_id}")

    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def bootstrap(self) -> str:
        return ",".join(f"127.0.0.1:{n.port}" for n in self.kafka_nodes)

    @property
    def sasl_bootstrap(self) -> str:
        if self.sasl_port is None:
            raise ConfigError("this stack has no SASL listener (set sasl_port)")
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def sasl_ssl_bootstrap(self) -> str:
        if self.sasl_ssl_port is None:
            raise ConfigError("this stack has no SASL_SSL listener (set sasl_ssl_port)")
        return f"127.0.0.1:{self.sasl_ssl_port}"

    # ---------------------------------------------------------------- prerequisites
    def kafka_classpath(self) -> str:
        """The broker's classpath, resolving the jars with Maven on first use."""
        if self.kafka_home is not None:
            libs = Path(self.kafka_home) / "libs"
            if not libs.is_dir():
                raise ConfigError(f"KAFKA_HOME={self.kafka_home} has no libs/ directory")
            return f"{libs}/*"
        if shutil.which("java") is None:
            raise ConfigError("java not found: install Java 17+ (Debian: apt-get install openjdk-17-jre-headless)")
        cache = Path(self.kafka_libs)
        stamp = cache / ".pom-sha"
        pom_sha = hashlib.sha256(_POM.read_bytes()).hexdigest()
        if not (stamp.exists() and stamp.read_text() == pom_sha):
            if shutil.which("mvn") is None:
                raise ConfigError("mvn not found: install Maven (apt-get install maven) or set KAFKA_HOME")
            log.info("resolving Apache Kafka jars with Maven into %s (first run only)", cache)
            if cache.exists():
                shutil.rmtree(cache)
            cache.mkdir(parents=True)
            cmd = ["mvn", "-q", "-B", "-f", str(_POM), "dependency:copy-dependencies", f"-DoutputDirectory={cache}"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise StackError(f"maven could not resolve Kafka: {r.stdout[-2000:]}{r.stderr[-2000:]}")
            stamp.write_text(pom_sha)
        return f"{cache}/*"

    # ---------------------------------------------------------------- kafka
    def _sasl_listener_names(self) -> list[str]:
        names = []
        if self.sasl_port is not None:
            names.append("sasl_plaintext")
        if self.sasl_ssl_port is not None:
            names.append("sasl_ssl")
        return names

    def _sasl_lines(self) -> list[str]:
        """server.properties lines of the optional SASL_PLAINTEXT / SASL_SSL listeners."""
        names = self._sasl_listener_names()
        if not names:
            return []
        if not self.sasl_users:
            raise ConfigError("a SASL listener needs at least one user in sasl_users")
        for user, pw in self.sasl_users.items():
            if not re.fullmatch(r"[A-Za-z0-9_.@+-]+", user) or not re.fullmatch(r"[A-Za-z0-9_.@+-]+", pw):
                raise ConfigError(f"SASL user {user!r}: names and passwords may use only letters, digits and _.@+-")
        unknown = set(self.sasl_mechanisms) - {"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}
        if unknown or not self.sasl_mechanisms:
            raise ConfigError(f"unsupported SASL mechanisms {sorted(unknown)}")
        lines = [f"sasl.enabled.mechanisms={','.join(self.sasl_mechanisms)}"]
        for listener in names:
            if "PLAIN" in self.sasl_mechanisms:
                users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
                lines.append(
                    f"listener.name.{listener}.plain.sasl.jaas.config="
                    f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};"
                )
            for mech in self.sasl_mechanisms:
                if mech.startswith("SCRAM"):
                    lines.append(
                        f"listener.name.{listener}.{mech.lower()}.sasl.jaas.config="
                        "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    )
        if self.sasl_ssl_port is not None:
            if self.ssl_keystore is None or not Path(self.ssl_keystore).is_file():
                raise ConfigError("a SASL_SSL listener needs ssl_keystore: a PEM file with the key and certificate chain")
            lines += [
                "listener.name.sasl_ssl.ssl.keystore.type=PEM",
                f"listener.name.sasl_ssl.ssl.keystore.location={self.ssl_keystore}",
            ]
        return lines

    def _replication_lines(self) -> list[str]:
        """Replication of the internal topics, and of new topics by default: none on one
        broker; on a cluster what production runs (3 copies, 2 in sync to acknowledge)."""
        rf = min(3, self.brokers)
        isr = 1 if rf == 1 else 2
        return [
            f"default.replication.factor={rf}",
            f"min.insync.replicas={isr}",
            f"offsets.topic.replication.factor={rf}",
            f"transaction.state.log.replication.factor={rf}",
            f"transaction.state.log.min.isr={isr}",
            f"share.coordinator.state.topic.replication.factor={rf}",
            f"share.coordinator.state.topic.min.isr={isr}",
        ]

    def _cluster_id(self) -> str:
        """The KRaft cluster id every node's storage is formatted with (made once, kept)."""
        path = self.root / "kafka-cluster-id"
        if not path.exists():
            path.write_text(base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("="))
        return path.read_text().strip()

    def _write_kafka_config(self, node: KafkaNode) -> Path:
        ndir = self.root / node.name
        ndir.mkdir(parents=True, exist_ok=True)
        props = ndir / "server.properties"
        data = ndir / "data"
        listeners = [f"PLAINTEXT://127.0.0.1:{node.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.brokers > 1 and (self.sasl_port is not None or self.sasl_ssl_port is not None):
            raise ConfigError("SASL listeners are for the single-broker stack")
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        if self.sasl_ssl_port is not None:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            protocols.append("SASL_SSL:SASL_SSL")
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.kafka_nodes)
        props.touch(mode=0o600)  # may hold SASL passwords
        props.chmod(0o600)
        props.write_text(
            "\n".join(
                [
                    "# generated by attnrec stack; edits are overwritten",
                    "process.roles=broker,controller",
                    f"node.id={node.node_id}",
                    f"controller.quorum.voters={voters}",
                    f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{node.controller_port}",
                    f"advertised.listeners={','.join(listeners)}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"listener.security.protocol.map={','.join(protocols)}",
                    f"log.dirs={data}",
                    "num.partitions=8",
                    "offsets.topic.num.partitions=8",
                    *self._replication_lines(),
                    "group.initial.rebalance.delay.ms=0",
                    "auto.create.topics.enable=true",
                    "log.retention.hours=168",
                    "log.segment.bytes=67108864",
                    *self._sasl_lines(),
                    "",
                ]
            )
        )
        if not (data / "meta.properties").exists():
            cmd = self._java(node.name) + ["kafka.tools.StorageTool", "format", f"--cluster-id={self._cluster_id()}",
                                           f"--config={props}"]  # fmt: skip
            if self._sasl_listener_names():
                for mech in self.sasl_mechanisms:
                    if mech.startswith("SCRAM"):
                        for user, pw in self.sasl_users.items():
                            cmd += ["--add-scram", f"{mech}=[name={user},password={pw}]"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise StackError(f"kafka storage format failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
        return props

    def _java(self, name: str = "kafka") -> list[str]:
        return [
            "java",
            "-Xms128m",
            f"-Xmx{self.kafka_heap}",
            f"-Dattnrec.node={name}",  # tells the nodes' processes apart (pid checks)
            "-XX:+UseG1GC",
            # quick: C1 only, a faster start for the test suite's many short-lived stacks; the
            # broker then costs ~2x the CPU per request, so a benchmark runs the full JIT
            *(["-XX:TieredStopAtLevel=1"] if self.kafka_jit == "quick" else []),
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            self.kafka_classpath(),
        ]

    def start_kafka(self, timeout: float = 90.0) -> None:
        """Start every broker that is not running and wait until the cluster answers with all
        of them."""
        nodes = [n for n in self.kafka_nodes if not self.broker_running(n.node_id)]
        if not nodes:
            return
        for n in nodes:
            if port_open(n.port):
                raise StackError(f"port {n.port} is taken by another process; set ATTNREC_KAFKA_PORT")
        for extra in (self.sasl_port, self.sasl_ssl_port):
            if extra is not None and port_open(extra):
                raise StackError(f"SASL port {extra} is taken by another process")
        procs = [(n, self._spawn_broker(n)) for n in nodes]  # a quorum needs its voters up together
        deadline = time.monotonic() + timeout
        for n, proc in procs:
            self._wait_kafka(n, proc, deadline)
        if self.brokers > 1:
            self._wait_brokers(deadline)
        for n, proc in procs:
            log.info("kafka %s up on 127.0.0.1:%d (pid %d)", n.name, n.port, proc.pid)

    def start_broker(self, node_id: int, timeout: float = 120.0) -> None:
        """Start one broker of the cluster again (after :meth:`stop_broker`)."""
        n = self.kafka_node(node_id)
        if self.broker_running(node_id):
            return
        deadline = time.monotonic() + timeout
        self._wait_kafka(n, self._spawn_broker(n), deadline)
        if self.brokers > 1:
            self._wait_brokers(deadline)
        log.info("kafka %s up again on 127.0.0.1:%d", n.name, n.port)

    def _spawn_broker(self, n: KafkaNode) -> subprocess.Popen[bytes]:
        props = self._write_kafka_config(n)
        logf = open(self.root / f"{n.name}.log", "ab")
        proc = subprocess.Popen(
            self._java(n.name) + ["kafka.Kafka", str(props)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs[n.name] = proc
        self._pidfile(n.name).write_text(str(proc.pid))
        return proc

    def _wait_kafka(self, n: KafkaNode, proc: subprocess.Popen[bytes], deadline: float) -> None:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.root / f"{n.name}.log").read_text(errors="replace")[-3000:]
                raise StackError(f"kafka {n.name} exited with {proc.returncode}; log tail:\n{tail}")
            if port_open(n.port) and self._kafka_answers(f"127.0.0.1:{n.port}"):
                return
            time.sleep(0.5)
        raise StackError(f"kafka {n.name} did not answer on 127.0.0.1:{n.port} in time; see {self.root / (n.name + '.log')}")

    def _wait_brokers(self, deadline: float) -> None:
        """Until the cluster's metadata lists every broker (a node answers before it has joined)."""
        from kafka import KafkaAdminClient

        want = {n.node_id for n in self.kafka_nodes}
        got: set[int] = set()
        while time.monotonic() < deadline:
            try:
                admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
                try:
                    got = {int(b.get("broker_id", b.get("node_id", -1))) for b in admin.describe_cluster()["brokers"]}
                finally:
                    admin.close()
                if got >= want:
                    return
            except Exception:  # a node still starting
                pass
            time.sleep(0.5)
        raise StackError(f"the Kafka cluster lists brokers {sorted(got)}, not {sorted(want)}")

    def _kafka_answers(self, bootstrap: str | None = None) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap or self.bootstrap, request_timeout_ms=3000)
        except Exception:  # broker still starting
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def _broker_marker(self, name: str) -> str:
        return f"-Dattnrec.node={name} " if self.brokers > 1 else "kafka.Kafka"

    def broker_running(self, node_id: int) -> bool:
        name = self.kafka_node(node_id).name
        pid = self._read_pid(name)
        return pid is not None and pid_alive(pid, self._broker_marker(name))

    def kafka_running(self) -> bool:
        return all(self.broker_running(n.node_id) for n in self.kafka_nodes)

    def stop_kafka(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        """Stop every broker, all at once: a cluster's last broker stopped alone would wait for
        a controller quorum that is gone."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.kafka_nodes)) as pool:
            for f in [pool.submit(self.stop_broker, n.node_id, kill=kill, timeout=timeout) for n in self.kafka_nodes]:
                f.result()

    def stop_broker(self, node_id: int, *, kill: bool = False, timeout: float = 30.0) -> None:
        """SIGTERM (or, ``kill``, SIGKILL) one broker and wait until it is gone."""
        name = self.kafka_node(node_id).name
        self._stop(name, self._broker_marker(name), kill=kill, timeout=timeout)

    def pause_broker(self, node_id: int, pause: bool = True) -> None:
        """SIGSTOP (``pause``) or SIGCONT one broker: a broker that stops answering without
        closing its connections (a long GC pause, a frozen VM)."""
        pid = self._read_pid(self.kafka_node(node_id).name)
        if pid is None:
            raise StackError(f"broker {node_id} is not running")
        os.kill(pid, signal.SIGSTOP if pause else signal.SIGCONT)
