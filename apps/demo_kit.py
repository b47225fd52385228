"""What both demos share: the banner, training and exporting a model, starting, awaiting and stopping the worker."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from attnrec.errors import StackError
from attnrec.events import ClickEvent
from attnrec.registry import Registry

from .settings import DemoSettings
from .stack import REPO_ROOT

__all__ = ["fresh_ids", "say", "train_and_export", "wait_ready", "write_jsonl", "start_worker", "stop_worker"]


def say(msg: str) -> None:
    print(f"\033[1m==>\033[0m {msg}", flush=True)


def train_and_export(s: DemoSettings, data: Path, out: Path, registry: Path, *, force: bool) -> tuple[str, dict[str, Any]]:
    """The training pipeline of ``attnrec train`` on the demo's events (its settings built from
    the demo's, so ``ATTNREC_TRAIN_*`` apply), then export and promote."""
    from ..exporter.export import export_checkpoint
    from ..training.cli import train_checkpoint
    from ..training.settings import TrainingSettings

    minutes = max(0.1, s.demo_train_seconds / 60.0)
    train_checkpoint(TrainingSettings.from_settings(s, data=data, data_format="events", train_out=out,
                                                    train_max_minutes=minutes, train_max_len=50, train_threads=1))
    version = export_checkpoint(out, registry, promote=True, force=force)
    return version, Registry(registry).read_manifest(version)


def wait_ready(port: int, proc: subprocess.Popen[bytes], logf: Path, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise StackError(f"worker exited with {proc.returncode}; see {logf}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                return dict(json.loads(r.read()))
        except OSError:
            time.sleep(0.5)
    raise StackError(f"worker not ready within {timeout:.0f}s; see {logf}")


def write_jsonl(path: Path, events: Any) -> Path:
    """``events`` (anything with ``to_json()``) as JSON lines at ``path``."""
    with open(path, "wb") as f:
        for ev in events:
            f.write(ev.to_json() + b"\n")
    return path


def start_worker(env: dict[str, str], logf: Path) -> subprocess.Popen[bytes]:
    """``attnrec worker`` in its own session (so it can be stopped with its children), log to ``logf``."""
    return subprocess.Popen([sys.executable, "-m", "attnrec.apps", "worker"], env=env, cwd=REPO_ROOT,
                            stdout=open(logf, "ab"), stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM (the worker finishes the batch in hand), SIGKILL after 60 s."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def fresh_ids(events: Any) -> list[Any]:
    """``events`` with event ids unique to this run: the demos' worlds are seeded, so a second
    demo on the same stack would send the same ids, and Redis' dedupe memory would take them for
    producer retries (applied once, never recommended for). Other events pass unchanged."""
    run = f"r{int(time.time())}"
    return [dataclasses.replace(ev, event_id=f"{run}-{ev.event_id}") if isinstance(ev, ClickEvent) else ev for ev in events]
