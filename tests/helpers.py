"""Test helpers: settings for the test stack, a small model, a worker subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from attnrec.settings import Settings
from attnrec.stack import free_port

REPO = Path(__file__).resolve().parents[1]


def settings_for(stack: Any, names: dict[str, str], registry: Path, **kw: Any) -> Settings:
    return Settings(
        kafka_bootstrap=stack.bootstrap,
        redis_url=stack.redis_url,
        registry=registry,
        partitions=kw.pop("partitions", 4),
        **names,
        **kw,
    )


def env_for(s: Settings, home: Path) -> dict[str, str]:
    """Environment for a worker subprocess with these settings."""
    env = dict(os.environ)
    env.update(
        {
            "ATTNREC_HOME": str(home),
            "ATTNREC_KAFKA_BOOTSTRAP": s.kafka_bootstrap,
            "ATTNREC_REDIS_URL": s.redis_url,
            "ATTNREC_REGISTRY": str(s.registry_dir),
            "ATTNREC_CLICKS_TOPIC": s.clicks_topic,
            "ATTNREC_RECS_TOPIC": s.recs_topic,
            "ATTNREC_DLQ_TOPIC": s.dlq_topic,
            "ATTNREC_UPDATES_TOPIC": s.updates_topic,
            "ATTNREC_GROUP_ID": s.group_id,
            "ATTNREC_PARTITIONS": str(s.partitions),
            "ATTNREC_BATCH_SIZE": str(s.batch_size),
            "ATTNREC_BUFFER_LEN": str(s.buffer_len),
            "ATTNREC_RELOAD_POLL_S": str(s.reload_poll_s),
        }
    )
    return env


class WorkerProc:
    """`attnrec worker` as a real subprocess (so tests can SIGKILL it)."""

    def __init__(self, s: Settings, home: Path, name: str = "worker") -> None:
        self.s = s
        self.home = home
        self.port = free_port()
        self.log = home / f"{name}-{self.port}.log"
        home.mkdir(parents=True, exist_ok=True)
        env = env_for(s, home)
        env["ATTNREC_WEB_PORT"] = str(self.port)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "attnrec", "worker"],
            env=env,
            cwd=REPO,
            stdout=open(self.log, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str, timeout: float = 2.0, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        req = urllib.request.Request(self.url(path), headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"worker exited {self.proc.returncode}:\n{self.tail()}")
            try:
                code, body = self.get("/readyz")
                last = body
                if code == 200:
                    return json.loads(body)
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker not ready in {timeout}s (last {last!r}):\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout: float = 60.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.proc.returncode


def build_small_registry(root: Path, *, seed: int = 3, n_events: int = 6000) -> Path:
    """Train a tiny model on synthetic events for a few seconds, export and promote it."""
    from exporter.export import export_checkpoint

    data = root / "train.jsonl"
    from training.synth import generate

    with open(data, "wb") as f:
        for ev in generate(150, 300, n_events, seed=seed):
            f.write(ev.to_json() + b"\n")
    ckpt = root / "ckpt"
    from attnrec.cli import main as cli_main

    rc = cli_main(["train", "--data", str(data), "--format", "events", "--out", str(ckpt), "--epochs", "2",
                   "--max-len", "20", "--d-model", "32", "--quiet"])
    assert rc == 0, "smoke training failed"
    reg = root / "registry"
    export_checkpoint(ckpt, reg, promote=True, force=True)
    return reg
