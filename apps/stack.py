"""The local stack: single-node Apache Kafka (KRaft) and Redis as background processes.

Data, logs and pid files live under ``<home>/stack``. Kafka's jars are resolved from Maven
Central with ``deploy/kafka/pom.xml`` (or taken from ``$KAFKA_HOME/libs``); Redis is Debian's
``redis-server`` with AOF on. ``up`` and ``down`` are idempotent. Tests create their own
:class:`LocalStack` on free ports under a temporary directory.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnrec.errors import ConfigError, StackError
from attnrec.settings import Settings

__all__ = ["LocalStack", "local_stack", "cmd_stack", "free_port", "REPO_ROOT"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
_LOG4J = REPO_ROOT / "deploy" / "kafka" / "log4j2.xml"


_HANDED_OUT: set[int] = set()


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now, never one handed out before by this
    process, and below the kernel's ephemeral range: a port from that range (``bind`` to 0) was
    once taken by one of the many client connections the tests open before the server it was
    meant for could bind it (Kafka: "Received a fatal error while waiting for all of the
    SocketServer Acceptors to be started")."""
    lo, _ = _ephemeral_range()
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(20000, lo) if lo > 21000 else 0
        if port in _HANDED_OUT:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _HANDED_OUT.add(port)
        return port
    raise StackError("no free TCP port on 127.0.0.1")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    if ") Z" in stat:  # zombie: exited, waiting to be reaped
        return False
    return marker in cmdline


@dataclass
class LocalStack:
    """One local Kafka broker + Redis server with their files under ``root``."""

    root: Path
    kafka_port: int = 9092
    controller_port: int = 9093
    redis_port: int = 6379
    kafka_home: Path | None = None
    kafka_libs: Path = field(default_factory=lambda: Path.home() / ".cache" / "attnrec" / "kafka-libs")
    redis_password: str | None = field(default=None, repr=False)
    kafka_heap: str = "768m"
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

    # ---------------------------------------------------------------- paths
    @property
    def kafka_dir(self) -> Path:
        return self.root / "kafka"

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

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

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    def _pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

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

    @staticmethod
    def redis_binary() -> str:
        path = shutil.which("redis-server")
        if path is None:
            raise ConfigError("redis-server not found: apt-get install redis-server (or point ATTNREC_REDIS_URL at a Redis)")
        return path

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
            "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={_LOG4J}",
            "-cp",
            self.kafka_classpath(),
        ]

    def start_kafka(self, timeout: float = 90.0) -> None:
        if self.kafka_running():
            return
        if _port_open(self.kafka_port):
            raise StackError(f"port {self.kafka_port} is taken by another process; set ATTNREC_KAFKA_PORT")
        for extra in (self.sasl_port, self.sasl_ssl_port):
            if extra is not None and _port_open(extra):
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
            if _port_open(self.kafka_port) and self._kafka_answers():
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
        return pid is not None and _pid_alive(pid, "kafka.Kafka")

    def stop_kafka(self, *, kill: bool = False, timeout: float = 30.0) -> None:
        self._stop("kafka", "kafka.Kafka", kill=kill, timeout=timeout)

    # ---------------------------------------------------------------- redis
    def start_redis(self, timeout: float = 20.0) -> None:
        if self.redis_running():
            return
        if _port_open(self.redis_port):
            raise StackError(f"port {self.redis_port} is taken by another process; set ATTNREC_REDIS_PORT")
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.redis_binary(),
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--dir", str(self.redis_dir),
            "--appendonly", "yes",
            "--appendfsync", self.redis_appendfsync,
            "--save", "",
            "--daemonize", "no",
            "--protected-mode", "yes",
        ]  # fmt: skip
        if self.redis_password:
            cmd += ["--requirepass", self.redis_password]
        logf = open(self.root / "redis.log", "ab")
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._procs["redis"] = proc
        self._pidfile("redis").write_text(str(proc.pid))
        deadline = time.monotonic() + timeout
        import redis

        while time.monotonic() < deadline:
            if proc.poll() is not None:
                tail = (self.root / "redis.log").read_text(errors="replace")[-2000:]
                raise StackError(f"redis exited with {proc.returncode}; log tail:\n{tail}")
            try:
                if redis.Redis.from_url(self.redis_url, socket_timeout=1).ping():
                    log.info("redis up on 127.0.0.1:%d (pid %d)", self.redis_port, proc.pid)
                    return
            except redis.exceptions.BusyLoadingError:
                pass
            except redis.exceptions.ConnectionError:
                pass
            time.sleep(0.1)
        raise StackError(f"redis did not answer on port {self.redis_port} within {timeout:.0f}s")

    def redis_running(self) -> bool:
        pid = self._read_pid("redis")
        return pid is not None and _pid_alive(pid, "redis-server")

    def stop_redis(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        self._stop("redis", "redis-server", kill=kill, timeout=timeout)

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

    # ---------------------------------------------------------------- helpers
    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _stop(self, name: str, marker: str, *, kill: bool, timeout: float) -> None:
        pid = self._read_pid(name)
        if pid is None or not _pid_alive(pid, marker):
            self._pidfile(name).unlink(missing_ok=True)
            return
        try:
            os.killpg(pid, signal.SIGKILL if kill else signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + timeout
        proc = self._procs.pop(name, None)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                break
            if proc is None and not _pid_alive(pid, marker):
                break
            time.sleep(0.1)
        else:
            log.warning("%s (pid %d) did not stop in %.0fs; killing", name, pid, timeout)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if proc is not None:
                proc.wait(10)
        self._pidfile(name).unlink(missing_ok=True)
        log.info("%s stopped", name)


def local_stack(s: Settings) -> LocalStack:
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
    )


def cmd_stack(s: Settings, args: Any) -> int:
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
