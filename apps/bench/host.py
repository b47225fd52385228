"""What the box is doing while the bench runs: load average, CPU seconds of a process, and the
local stack's own processes.

The bench shares a small box with Kafka, Redis and the worker, so every figure is reported
beside the 1-minute load average, and CPU is charged per process (worker, Kafka, Redis, the
generator) rather than inferred from wall time.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import Any

from ..stack.settings import StackSettings

__all__ = ["loadavg", "cpu_seconds", "stack_procs"]

log = logging.getLogger(__name__)


def loadavg() -> list[float]:
    """The 1, 5 and 15-minute load averages (empty where the platform has none)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def cpu_seconds(proc: Any, *, children: bool = True) -> float:
    """User + system CPU seconds of a ``psutil.Process`` and, with ``children``, of its reaped
    children and its running ones (a worker's shadow-scoring process); 0 when gone. The bench's
    own process is counted without its children: they are the worker, the baselines and, with
    ``--start-stack``, Kafka and Redis, each reported on its own (counting them as the
    generator's once made the harness look like 1.8 cores at 1,000 events/s)."""
    try:
        t = proc.cpu_times()
        total = float(t.user + t.system)
        if not children:
            return total
        total += float(getattr(t, "children_user", 0.0) + getattr(t, "children_system", 0.0))
    except Exception:
        return 0.0
    try:
        for child in proc.children(recursive=True):
            with contextlib.suppress(Exception):
                c = child.cpu_times()
                total += float(c.user + c.system)
    except Exception:
        pass
    return total


def stack_procs(s: StackSettings) -> dict[str, Any]:
    """psutil handles of the local stack's Kafka and Redis (from their pid files), when running here."""
    import psutil

    out: dict[str, Any] = {}
    for name in ("kafka", "redis"):
        try:
            pid = int((s.stack_dir / f"{name}.pid").read_text().strip())
            out[name] = psutil.Process(pid)
        except (OSError, ValueError, psutil.Error):
            pass
    return out
