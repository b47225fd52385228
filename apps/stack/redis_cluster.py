"""The local stack's Redis Cluster: Debian's ``redis-server`` in cluster mode, 3 masters and 3
replicas on loopback (each node with AOF, like the single Redis), joined with
``redis-cli --cluster create``. Each node can be stopped, killed, paused and started on its own
(the fault tests); :meth:`RedisClusterNodes.cluster_nodes` says who is master of what now.

``cluster-node-timeout`` is 3 s (production default: 15 s): a master that stops answering is
failed over to its replica within a few seconds. ``cluster-require-full-coverage no``: while one
master's slots move, the others keep serving.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import time
from typing import Any, NamedTuple

from attnrec.errors import ConfigError, StackError

from .processes import pid_alive, port_open
from .redis_server import RedisServer, server_args

__all__ = ["RedisClusterNodes", "RedisNode", "ClusterRole"]

log = logging.getLogger(__name__)

#: 3 masters, each with one replica
CLUSTER_NODES = 6


class RedisNode(NamedTuple):
    """One node of the local Redis Cluster: its index (1-based), name (pid file, data directory,
    log), client port and cluster-bus port."""

    index: int
    name: str
    port: int
    bus_port: int


class ClusterRole(NamedTuple):
    """What one node is now, as the cluster sees it (``CLUSTER NODES``)."""

    port: int
    node_id: str
    master: bool
    master_id: str | None  # a replica's master
    slots: list[tuple[int, int]]  # a master's slot ranges
    failed: bool


class RedisClusterNodes(RedisServer):
    """The Redis half of :class:`~attnrec.apps.stack.local.LocalStack`: one Redis server, or,
    with ``redis_cluster``, a Redis Cluster of six (its fields are there)."""

    redis_cluster: bool
    redis_cluster_ports: tuple[int, ...]
    redis_cluster_bus_ports: tuple[int, ...]
    redis_node_timeout_ms: int

    # ---------------------------------------------------------------- layout
    @property
    def redis_nodes(self) -> list[RedisNode]:
        """The nodes: ``redis-1`` .. ``redis-6`` on ``redis_cluster_ports`` (default: ``redis_port``
        + 0..5), their buses on ``redis_cluster_bus_ports`` (default: each port + 10000)."""
        ports = self.redis_cluster_ports or tuple(self.redis_port + i for i in range(CLUSTER_NODES))
        bus = self.redis_cluster_bus_ports or tuple(p + 10000 for p in ports)
        if len(ports) != CLUSTER_NODES or len(bus) != CLUSTER_NODES:
            raise ConfigError(f"a Redis Cluster needs {CLUSTER_NODES} ports and {CLUSTER_NODES} bus ports")
        return [RedisNode(i + 1, f"redis-{i + 1}", ports[i], bus[i]) for i in range(CLUSTER_NODES)]

    def redis_node(self, port: int) -> RedisNode:
        for n in self.redis_nodes:
            if n.port == port:
                return n
        raise ConfigError(f"no Redis node on port {port}")

    @property
    def redis_url(self) -> str:
        if not self.redis_cluster:
            return super().redis_url
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{n.port}" for n in self.redis_nodes[:3])

    # ---------------------------------------------------------------- start and stop
    def start_redis(self, timeout: float = 20.0) -> None:
        if not self.redis_cluster:
            super().start_redis(timeout)
            return
        down = [n for n in self.redis_nodes if not self.redis_node_running(n.port)]
        for n in down:
            for p in (n.port, n.bus_port):
                if port_open(p):
                    raise StackError(f"port {p} is taken by another process; set ATTNREC_REDIS_PORT")
        for n in down:
            self._spawn_node(n)
        deadline = time.monotonic() + timeout + 30
        for n in down:
            self._wait_node(n, deadline)
        if not any(r.slots for r in self._roles_or_empty()):
            self._create_cluster()
        self.wait_cluster_ok(deadline - time.monotonic())
        log.info("redis cluster up on %s", self.redis_url.split("@")[-1])

    def start_redis_node(self, port: int, timeout: float = 30.0) -> None:
        """Start one node again (it rejoins the cluster from its nodes.conf; a master that was
        failed over comes back as a replica of its successor)."""
        n = self.redis_node(port)
        if not self.redis_node_running(port):
            self._spawn_node(n)
            self._wait_node(n, time.monotonic() + timeout)

    def _spawn_node(self, n: RedisNode) -> None:
        d = self.root / n.name
        d.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.redis_binary(),
            "--port", str(n.port),
            "--cluster-port", str(n.bus_port),
            "--bind", "127.0.0.1",
            "--dir", str(d),
            "--cluster-enabled", "yes",
            "--cluster-config-file", "nodes.conf",
            "--cluster-node-timeout", str(self.redis_node_timeout_ms),
            "--cluster-require-full-coverage", "no",
            *server_args(self.redis_appendfsync),
        ]  # fmt: skip
        if self.redis_password:
            cmd += ["--requirepass", self.redis_password, "--masterauth", self.redis_password]
        logf = open(self.root / f"{n.name}.log", "ab")
        proc = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)  # fmt: skip
        self._procs[n.name] = proc
        self._pidfile(n.name).write_text(str(proc.pid))

    def _client(self, port: int, timeout: float = 2.0) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, password=self.redis_password, socket_timeout=timeout,
                           socket_connect_timeout=timeout)  # fmt: skip

    def _wait_node(self, n: RedisNode, deadline: float) -> None:
        import redis

        proc = self._procs.get(n.name)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                tail = (self.root / f"{n.name}.log").read_text(errors="replace")[-2000:]
                raise StackError(f"redis {n.name} exited with {proc.returncode}; log tail:\n{tail}")
            try:
                if self._client(n.port, 1).ping():
                    return
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError, redis.exceptions.TimeoutError):
                pass
            time.sleep(0.1)
        raise StackError(f"redis {n.name} did not answer on port {n.port} in time")

    def _create_cluster(self) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise ConfigError("redis-cli not found: apt-get install redis-tools (it comes with redis-server)")
        env = dict(os.environ)
        if self.redis_password:
            env["REDISCLI_AUTH"] = self.redis_password  # not on the command line
        cmd = [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.redis_nodes),
               "--cluster-replicas", "1", "--cluster-yes"]  # fmt: skip
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
        if r.returncode != 0:
            raise StackError(f"redis-cli --cluster create failed: {r.stdout[-2000:]}{r.stderr[-2000:]}")
        log.info("redis cluster created: 3 masters, 3 replicas")

    def wait_cluster_ok(self, timeout: float = 60.0) -> None:
        """Until every running node says ``cluster_state:ok`` and knows every other node, and
        each master has a replica (after a failover: once the old master rejoined as one)."""
        deadline = time.monotonic() + max(1.0, timeout)
        why = "no answer"
        while time.monotonic() < deadline:
            try:
                live = [n for n in self.redis_nodes if self.redis_node_running(n.port)]
                states = [self._client(n.port).cluster("info") for n in live]
                roles = self.cluster_nodes()
                masters = [r for r in roles if r.master and r.slots and not r.failed]
                covered = sum(b - a + 1 for r in masters for a, b in r.slots)
                if all(_info(s).get("cluster_state") == "ok" for s in states) and covered == 16384 and all(
                        _info(s).get("cluster_known_nodes") == str(CLUSTER_NODES) for s in states):
                    return
                why = f"states {[_info(s).get('cluster_state') for s in states]}, {covered} slots served"
            except Exception as exc:  # a node still joining
                why = f"{type(exc).__name__}: {exc}"
            time.sleep(0.2)
        raise StackError(f"the Redis Cluster is not ok: {why}")

    def redis_node_running(self, port: int) -> bool:
        name = self.redis_node(port).name
        pid = self._read_pid(name)
        return pid is not None and pid_alive(pid, f"127.0.0.1:{port}")

    def redis_running(self) -> bool:
        if not self.redis_cluster:
            return super().redis_running()
        return all(self.redis_node_running(n.port) for n in self.redis_nodes)

    def stop_redis(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        if not self.redis_cluster:
            super().stop_redis(kill=kill, timeout=timeout)
            return
        for n in self.redis_nodes:
            self.stop_redis_node(n.port, kill=kill, timeout=timeout)

    def stop_redis_node(self, port: int, *, kill: bool = False, timeout: float = 20.0) -> None:
        """SIGTERM (or, ``kill``, SIGKILL) one node and wait until it is gone."""
        self._stop(self.redis_node(port).name, f"127.0.0.1:{port}", kill=kill, timeout=timeout)

    def pause_redis_node(self, port: int, pause: bool = True) -> None:
        """SIGSTOP (``pause``) or SIGCONT one node."""
        pid = self._read_pid(self.redis_node(port).name)
        if pid is None:
            raise StackError(f"redis node {port} is not running")
        os.kill(pid, signal.SIGSTOP if pause else signal.SIGCONT)

    # ---------------------------------------------------------------- who is who
    def cluster_nodes(self) -> list[ClusterRole]:
        """Every node's role now, as the first node that answers sees it."""
        last: Exception | None = None
        for n in self.redis_nodes:
            if not self.redis_node_running(n.port):
                continue
            try:
                return _parse_nodes(self._client(n.port).execute_command("CLUSTER", "NODES"))
            except Exception as exc:  # stopped, paused, or still loading
                last = exc
        raise StackError(f"no Redis node answers CLUSTER NODES: {last}")

    def _roles_or_empty(self) -> list[ClusterRole]:
        try:
            return self.cluster_nodes()
        except StackError:
            return []

    def master_of(self, slot: int) -> ClusterRole:
        """The node serving ``slot`` now."""
        for r in self.cluster_nodes():
            if r.master and not r.failed and any(a <= slot <= b for a, b in r.slots):
                return r
        raise StackError(f"no master serves slot {slot}")

    def replicas_of(self, master: ClusterRole) -> list[ClusterRole]:
        return [r for r in self.cluster_nodes() if not r.master and r.master_id == master.node_id]


def _info(raw: Any) -> dict[str, str]:
    if isinstance(raw, dict):
        return {str(k): str(v) for k, v in raw.items()}
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    return dict(line.split(":", 1) for line in text.splitlines() if ":" in line)


def _parse_nodes(raw: Any) -> list[ClusterRole]:
    """``CLUSTER NODES`` lines: ``<id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slot>...``."""
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    out = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        flags = parts[2].split(",")
        port = int(parts[1].split("@")[0].rsplit(":", 1)[1])
        slots = []
        for sl in parts[8:]:
            if sl.startswith("["):  # a slot being migrated
                continue
            a, _, b = sl.partition("-")
            slots.append((int(a), int(b or a)))
        out.append(ClusterRole(port, parts[0], "master" in flags, None if parts[3] == "-" else parts[3], slots,
                               "fail" in flags or "fail?" in flags))  # fmt: skip
    return out
