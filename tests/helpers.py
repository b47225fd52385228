"""Test helpers: settings for the test stack, a small model, a worker subprocess."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson
from attnrec.apps.bench.worker import WorkerHandle, settings_env
from attnrec.stream.core.buffer import RedisBuffers
from attnrec.stream.core.metrics import WorkerMetrics
from attnrec.stream.core.model import ModelWatcher
from attnrec.stream.core.processor import Processor
from attnrec.stream.core.records import RawRecord
from attnrec.stream.stages import build_stages

from attnrec.errors import AttnrecError
from attnrec.redis_util import redis_client
from attnrec.settings import Settings

REPO = Path(__file__).resolve().parents[1]


def settings_for(stack: Any, names: dict[str, str], registry: Path, cls: type[Settings] = Settings, **kw: Any) -> Any:
    """``cls`` (the worker's settings unless a tool's) on the test stack, with a test's topic
    and group ``names`` and the fields ``kw``."""
    return cls(
        kafka_bootstrap=stack.bootstrap,
        redis_url=kw.pop("redis_url", stack.redis_url),
        registry=registry,
        partitions=kw.pop("partitions", 4),
        **names,
        **kw,
    )


def env_for(s: Settings, home: Path) -> dict[str, str]:
    """Environment of a subprocess with these settings (every field of their class) and
    ``ATTNREC_HOME=home``: ours plus :func:`attnrec.apps.bench.worker.settings_env` (the worker's
    own way to pass settings on)."""
    env = dict(os.environ)
    env.update(settings_env(s.model_copy(update={"home": home})))
    return env


class WorkerProc(WorkerHandle):
    """`attnrec worker` as a real subprocess (so tests can SIGKILL it): the benchmark's
    :class:`~attnrec.apps.bench.worker.WorkerHandle` with ``ATTNREC_HOME=home`` and its log in ``home``."""

    def __init__(self, s: Settings, home: Path, name: str = "worker") -> None:
        self.home = home
        super().__init__(s.model_copy(update={"home": home}), home, name=name)

    def wait_ready(self, timeout: float = 90.0) -> dict[str, Any]:
        """The ``/readyz`` body once ready; AssertionError with the log's tail otherwise."""
        try:
            return super().wait_ready(timeout)
        except AttnrecError as exc:
            raise AssertionError(str(exc)) from None


def build_small_registry(root: Path, *, seed: int = 3, n_events: int = 6000, n_users: int = 150,
                         train_args: tuple[str, ...] = ("--epochs", "2")) -> Path:
    """Train a tiny model on synthetic events (the world of ``seed``) for a few seconds, export
    and promote it."""
    from attnrec.exporter.export import export_checkpoint

    data = root / "train.jsonl"
    from attnrec.training.sim.synth import generate

    with open(data, "wb") as f:
        for ev in generate(n_users, 300, n_events, seed=seed):
            f.write(ev.to_json() + b"\n")
    ckpt = root / "ckpt"
    from attnrec.apps.cli import main as cli_main

    rc = cli_main(["train", "--data", str(data), "--format", "events", "--out", str(ckpt), *train_args,
                   "--max-len", "20", "--d-model", "32", "--quiet"])
    assert rc == 0, "smoke training failed"
    reg = root / "registry"
    export_checkpoint(ckpt, reg, promote=True, force=True)
    return reg


def republish(reg: Any, version: str) -> str:
    """Publish ``version``'s files again as a new version (same weights; its step graph too,
    for an incremental model); returns the new version's name."""
    vdir = reg.version_dir(version)
    manifest = {k: v for k, v in reg.read_manifest(version).items() if k != "version"}
    step = vdir / "step.onnx"
    return str(reg.publish(vdir / "model.onnx", manifest, check=False, step_onnx_path=step if step.is_file() else None))


class BatchRun:
    """A :class:`Processor` on the test Redis whose produced recommendations are kept."""

    def __init__(self, s: Settings, registry: Path | None) -> None:
        self.s = s
        self.buffers = RedisBuffers(redis_client(s), max_len=s.buffer_len, ttl_s=3600, dedupe_window=64)
        watcher = ModelWatcher(registry or s.home / "no-registry")
        metrics = WorkerMetrics()
        self.stages = build_stages(s, self.buffers.r, metrics, watcher)
        self.proc = Processor(s, self.buffers, metrics, watcher, self.stages)
        self.proc.set_model(watcher.load_now())
        self.proc.output.send = self._send
        self.recs: list[dict[str, Any]] = []
        self.offset = 0

    async def _send(self, topic: str, key: bytes | None, value: bytes, headers: Any = None,
                    partition: int | None = None) -> asyncio.Future[Any]:
        if topic == self.s.recs_topic:
            self.recs.append(orjson.loads(value))
        f = asyncio.get_running_loop().create_future()
        f.set_result(None)
        return f

    async def batch(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        records = []
        for ev in events:
            records.append(RawRecord("clicks", 0, self.offset, ev["user_id"].encode(), orjson.dumps(ev)))
            self.offset += 1
        n = len(self.recs)
        await self.proc.finish(await self.proc.prepare(records))
        await self.flush()
        return self.recs[n:]

    async def flush(self) -> None:
        """What the worker's once-a-second tasks write (trending counts, online totals)."""
        for stage in self.stages.all:
            flush = getattr(stage, "flush", None)
            if flush is not None:
                await flush()
