"""The local stack's Redis: Debian's ``redis-server`` on loopback, with AOF on."""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from pathlib import Path

from attnrec.errors import ConfigError, StackError

from .processes import Processes, pid_alive, port_open

__all__ = ["RedisServer", "server_args"]

log = logging.getLogger(__name__)



def server_args(appendfsync: str) -> list[str]:
    """What every local redis-server runs with, single or a cluster node: the AOF with the given
    fsync policy, no RDB snapshots, in the foreground, protected mode."""
    return ["--appendonly", "yes", "--appendfsync", appendfsync, "--save", "", "--daemonize", "no",
            "--protected-mode", "yes"]  # fmt: skip

class RedisServer(Processes):
    """The Redis half of :class:`~attnrec.apps.stack.local.LocalStack` (its fields are there)."""

    redis_port: int
    redis_password: str | None
    redis_appendfsync: str

    @property
    def redis_dir(self) -> Path:
        return self.root / "redis"

    @property
    def redis_url(self) -> str:
        auth = f":{self.redis_password}@" if self.redis_password else ""
        return f"redis://{auth}127.0.0.1:{self.redis_port}/0"

    @staticmethod
    def redis_binary() -> str:
        path = shutil.which("redis-server")
        if path is None:
            raise ConfigError("redis-server not found: apt-get install redis-server (or point ATTNREC_REDIS_URL at a Redis)")
        return path

    # ---------------------------------------------------------------- redis
    def start_redis(self, timeout: float = 20.0) -> None:
        if self.redis_running():
            return
        if port_open(self.redis_port):
            raise StackError(f"port {self.redis_port} is taken by another process; set ATTNREC_REDIS_PORT")
        self.redis_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.redis_binary(),
            "--port", str(self.redis_port),
            "--bind", "127.0.0.1",
            "--dir", str(self.redis_dir),
            *server_args(self.redis_appendfsync),
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
            except (redis.exceptions.BusyLoadingError, redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
                pass  # still starting: loading its data, or too busy to answer within the second
            time.sleep(0.1)
        raise StackError(f"redis did not answer on port {self.redis_port} within {timeout:.0f}s")

    def redis_running(self) -> bool:
        pid = self._read_pid("redis")
        return pid is not None and pid_alive(pid, "redis-server")

    def stop_redis(self, *, kill: bool = False, timeout: float = 20.0) -> None:
        self._stop("redis", "redis-server", kill=kill, timeout=timeout)
