"""Where a worker's time goes per event, in process: the stage profile.

It runs the worker's own hot path, :class:`attnrec.stream.core.processor.Processor` with the
stages the settings configure (:func:`attnrec.stream.stages.build_stages`), against the real
Redis and the real model (onnxruntime, or the torch-eager baseline), with the profile stage
(:class:`attnrec.stream.stages.profile.ProfileStage`) attached: parse -> one Lua call -> build
inputs -> one model run -> recommendations -> JSON -> store the latest recs, each step's wall
time and the thread's CPU time summed apart, and each enabled stage's hooks charged to the
stage. Kafka is left out (the records are handed over directly, and produced records go to an
already-resolved future): the end-to-end runs measure it.

Every batch is scored inline (on the calling thread), so the thread's CPU time includes the
model; the first batch is a warm-up and is not counted. ``warm`` primes the parsed-entry memo
(:class:`attnrec.stream.core.inputs.EntryTable`) with every user's buffer first, the steady state of a
serving worker that has seen a returning user's older events in earlier batches; without it a
cold start is measured (every entry parsed). Memo-warm, the 12,000-item L=50 shape measured
348 µs of CPU per event at B=256 against 2,188 at B=1 (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError
from attnrec.settings import Settings

from .host import loadavg
from .load import EventSource

__all__ = ["stage_profile"]

log = logging.getLogger(__name__)

#: Redis socket timeout of the profile: one B=256 Lua call on a saturated box took seconds.
REDIS_TIMEOUT_S = 120.0


def stage_profile(s: Settings, registry: Path, items: Sequence[str], users: Sequence[str], *, batch_size: int,
                  events: int = 4096, scorer: str | None = None, warm: bool = True) -> dict[str, Any]:  # fmt: skip
    """Profile ``events`` events (plus one warm-up batch) of ``users`` in batches of
    ``batch_size`` through :class:`attnrec.stream.core.processor.Processor`; ``scorer`` (default
    ``s.scorer``) is onnx or torch. Returns µs per event of each stage, wall and thread CPU."""
    from attnrec.redis_util import redis_client

    from ...stream.core.buffer import RedisBuffers, user_keys
    from ...stream.core.inputs import build_inputs
    from ...stream.core.metrics import WorkerMetrics
    from ...stream.core.model import ModelWatcher
    from ...stream.core.processor import STEPS, Processor
    from ...stream.core.records import RawRecord
    from ...stream.stages import build_stages
    from ...stream.stages.profile import ProfileStage

    scorer = scorer or s.scorer
    factory = None
    if scorer == "torch":
        from ...exporter.eager import torch_session_factory

        factory = torch_session_factory(s.ort_threads)
    watcher = ModelWatcher(registry, threads=s.ort_threads, session_factory=factory)
    model = watcher.load_now()
    if model is None:
        raise AttnrecError(f"no usable promoted model in {registry}: {watcher.last_error or 'nothing promoted'}")
    # a topic of its own: the buffers' offset watermarks then take every event as new, however
    # many profiles ran against these users before
    topic = f"{s.clicks_topic}-stages-{uuid.uuid4().hex[:8]}"
    source = EventSource(items, users, seed=11)
    # an incremental model, warm: first one event per user, which fills every user's key/value
    # cache (a serving worker's steady state), not measured
    fill = [RawRecord(topic, hash(user) % s.partitions, off, key, value)
            for off, (_, user, key, value) in enumerate(source.one_per_user())] if warm and model.incremental else []
    src = iter(source)
    recs = []
    for off in range(len(fill), len(fill) + events + batch_size):
        _, user, key, value = next(src)
        recs.append(RawRecord(topic, hash(user) % s.partitions, off, key, value))
    fill_batches = [fill[i : i + 256] for i in range(0, len(fill), 256)]
    batches = [recs[i : i + batch_size] for i in range(0, len(recs), batch_size)]
    ret = max(model.max_len + 1, s.exclude_window if s.exclude_seen else 0)  # what the worker reads back
    metrics = WorkerMetrics()

    async def no_kafka(topic: str, key: bytes | None, value: bytes, headers: Any = None,
                       partition: int | None = None) -> asyncio.Future[Any]:
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    def failures() -> float:
        return sum(metrics.registry.get_sample_value("attnrec_batch_retries_total", {"kind": k}) or 0.0
                   for k in ("transient", "error"))  # fmt: skip

    async def run_batch(proc: Processor, batch: list[RawRecord]) -> None:
        # Processor.process retries a failing batch (forever, when Redis is away): a profile
        # stops at the first failed attempt instead, as its figures would be wrong
        task = asyncio.ensure_future(proc.process(batch))
        while True:
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if failures():
                task.cancel()
                raise AttnrecError(f"stage profile: a batch of {len(batch)} failed ({failures():.0f} failed attempts); "
                                   "see the log")  # fmt: skip
            if done:
                return

    async def go() -> ProfileStage:
        bufs = RedisBuffers(redis_client(s, timeout_s=REDIS_TIMEOUT_S), max_len=s.buffer_len, ttl_s=s.buffer_ttl_s,
                            dedupe_window=s.dedupe_window)  # fmt: skip
        await bufs.mark_state("benchmark stage profile")
        built = build_stages(s, bufs.r, metrics, watcher, profile=True)
        prof = built["profile"]
        assert isinstance(prof, ProfileStage)
        proc = Processor(s, bufs, metrics, watcher, built)
        proc.set_model(model)
        proc.output.send = no_kafka
        proc.inline_rows = 10**9  # score on this thread, so its CPU time counts the model
        try:
            if warm:
                for i in range(0, len(users), 500):
                    part = list(users[i : i + 500])
                    async with bufs.r.pipeline(transaction=False) as p:
                        for u in part:
                            p.lrange(user_keys(u)[0], 0, ret - 1)
                        got = await p.execute()
                    build_inputs(model, dict(zip(part, got, strict=True)), part)
            for batch in fill_batches:
                await run_batch(proc, batch)
            for bi, batch in enumerate(batches):
                await run_batch(proc, batch)
                if bi == 0:
                    prof.reset()  # warm-up batch
                    base[:] = cache_counts()  # hits and misses before the measured batches
            names[:] = [n for n in built.names if n != "profile"]
        finally:
            built.close()
            await bufs.r.aclose()
        return prof

    def cache_counts() -> tuple[float, float]:
        get = metrics.registry.get_sample_value
        return get("attnrec_cache_hits_total") or 0.0, get("attnrec_cache_misses_total") or 0.0

    base = [0.0, 0.0]
    names: list[str] = []
    c0 = time.process_time()
    st = asyncio.run(go())
    cpu = time.process_time() - c0
    n = max(1, st.events)
    steps = STEPS[1:]
    per = {k: round(1e6 * st.wall[k] / n, 1) for k in steps}
    cpu_per = {k: round(1e6 * st.cpu[k] / n, 1) for k in steps}
    stage_wall = {k: round(1e6 * st.stage_wall.get(k, 0.0) / n, 1) for k in names}
    stage_cpu = {k: round(1e6 * st.stage_cpu.get(k, 0.0) / n, 1) for k in names}
    per["total"] = round(sum(per.values()) + sum(stage_wall.values()), 1)
    cpu_per["total"] = round(sum(cpu_per.values()) + sum(stage_cpu.values()), 1)
    hits, misses = cache_counts()
    return {"batch_size": batch_size, "scorer": scorer, "warm": warm, "events": st.events, "us_per_event": per,
            "stages": names, "stage_us_per_event": stage_wall, "stage_cpu_us_per_event": stage_cpu,
            "cache": {"hits": hits - base[0], "misses": misses - base[1]} if model.incremental else None,
            "cpu_us_per_event": cpu_per, "process_cpu_us_per_event": round(1e6 * cpu / n, 1),
            "load_avg": loadavg()}  # fmt: skip
