"""What both servers of the local stack share: the repository root, free ports, and starting
and stopping a server process by its pid file under the stack's root."""

from __future__ import annotations

import logging
import os
import random
import signal
import socket
import subprocess
import time
from pathlib import Path

from attnrec.errors import StackError

__all__ = ["REPO_ROOT", "Processes", "free_port", "port_open", "pid_alive"]

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]

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


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def pid_alive(pid: int, marker: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    stat = Path(f"/proc/{pid}/stat").read_text(errors="replace")
    if ") Z" in stat:  # zombie: exited, waiting to be reaped
        return False
    return marker in cmdline




class Processes:
    """Pid files and stopping, for the server mix-ins of :class:`~attnrec.apps.stack.local.LocalStack`."""

    root: Path
    _procs: dict[str, subprocess.Popen[bytes]]

    def _pidfile(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    # ---------------------------------------------------------------- helpers
    def _read_pid(self, name: str) -> int | None:
        try:
            return int(self._pidfile(name).read_text().strip())
        except (OSError, ValueError):
            return None

    def _stop(self, name: str, marker: str, *, kill: bool, timeout: float) -> None:
        pid = self._read_pid(name)
        if pid is None or not pid_alive(pid, marker):
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
            if proc is None and not pid_alive(pid, marker):
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
