"""The local stack's Kafka: one broker in KRaft mode (its own controller), its jars resolved
from Maven Central with ``deploy/kafka/pom.xml`` (or taken from ``$KAFKA_HOME/libs``), with
optional SASL_PLAINTEXT and SASL_SSL listeners beside the PLAINTEXT one."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shutil
import subprocess
import time
import uuid
from pathlib import Path

from attnrec.errors import ConfigError, StackError

from .processes import REPO_ROOT, Processes, pid_alive, port_open

__all__ = ["KafkaBroker"]

log = logging.getLogger(__name__)

_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.xml"


class KafkaBroker(Processes):
    """The Kafka half of :class:`~attnrec.apps.stack.local.LocalStack` (its fields are there)."""

    kafka_port: int
    controller_port: int
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
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

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

    def _write_kafka_config(self) -> Path:
        self.kafka_dir.mkdir(parents=True, exist_ok=True)
        props = self.kafka_dir / "server.properties"
        data = self.kafka_dir / "data"
        listeners = [f"PLAINTEXT://127.0.0.1:{self.kafka_port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        if self.sasl_port is not None:
            listeners.append(f"SASL_PLAINTEXT://127.0.0.1:{self.sasl_port}")
            protocols.append("SASL_PLAINTEXT:SASL_PLAINTEXT")
        if self.sasl_ssl_port is not None:
            listeners.append(f"SASL_SSL://127.0.0.1:{self.sasl_ssl_port}")
            protocols.append("SASL_SSL:SASL_SSL")
        props.touch(mode=0o600)  # may hold SASL passwords
        props.chmod(0o600)
        props.write_text(
            "\n".join(
                [
                    "# generated by attnrec stack; edits are overwritten",
                    "process.roles=broker,controller",
                    "node.id=1",
                    f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
                    f"listeners={','.join(listeners)},CONTROLLER://127.0.0.1:{self.controller_port}",
                    f"advertised.listeners={','.join(listeners)}",
                    "controller.listener.names=CONTROLLER",
                    "inter.broker.listener.name=PLAINTEXT",
                    f"listener.security.protocol.map={','.join(protocols)}",
                    f"log.dirs={data}",
                    "num.partitions=8",
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=8",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
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
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            cmd = self._java() + ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", f"--config={props}"]
            if self._sasl_listener_names():
                for mech in self.sasl_mechanisms:
                    if mech.startswith("SCRAM"):
                        for user, pw in self.sasl_users.items():
                            cmd += ["--add-scram", f"{mech}=[name={user},password={pw}]"]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                raise StackError(f"kafka storage format failed: {r.stdout[-1500:]}{r.stderr[-1500:]}")
        return props

    def _java(self) -> list[str]:
        return [
            "java",
            "-Xms128m",
            f"-Xmx{self.kafka_heap}",
            "-XX:+UseG1GC",
            # quick: C1 only, a faster start for the test suite's many short-lived stacks; the
            # broker then costs ~2x the CPU per request, so a benchmark runs the full JIT
            *(["-XX:TieredStopAtLevel=1"] if self.kafka_jit == "quick" else []),
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            self.kafka_classpath(),
        ]

    def start_kafka(self, timeout: float = 90.0) -> None:
        if self.kafka_running():
            return
        if port_open(self.kafka_port):
            raise StackError(f"port {self.kafka_port} is taken by another process; set ATTNREC_KAFKA_PORT")
        for extra in (self.sasl_port, self.sasl_ssl_port):
            if extra is not None and port_open(extra):
                raise StackError(f"SASL port {extra} is taken by another process")
        props = self._write_kafka_config()
        logf = open(self.root / "kafka.log", "ab")
        proc = subprocess.Popen(
            self._java() + ["kafka.Kafka", str(props)],
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self._procs["kafka"] = proc
        self._pidfile("kafka").write_text(str(proc.pid))
        self._wait_kafka(proc, timeout)
        log.info("kafka up on %s (pid %d)", self.bootstrap, proc.pid)

    def _wait_kafka(self, proc: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.root / "kafka.log").read_text(errors="replace")[-3000:]
                raise StackError(f"kafka exited with {proc.returncode}; log tail:\n{tail}")
            if port_open(self.kafka_port) and self._kafka_answers():
                return
            time.sleep(0.5)
        raise StackError(f"kafka did not answer on {self.bootstrap} within {timeout:.0f}s; see {self.root / 'kafka.log'}")

    def _kafka_answers(self) -> bool:
        from kafka import KafkaAdminClient

        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
        except Exception:  # broker still starting
            return False
        try:
            admin.list_topics()
            return True
        except Exception:
            return False
        finally:
            admin.close()

    def kafka_running(self) -> bool:
        pid = self._read_pid("kafka")
        return pid is not None and pid_alive(pid, "kafka.Kafka")

    def stop_kafka(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        self._stop("kafka", "kafka.Kafka", kill=kill, timeout=timeout)

