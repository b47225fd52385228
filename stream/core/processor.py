"""One batch, end to end, independent of faust: :class:`Processor`.

The core every deployment runs: parse (bad messages become dead letters), apply to the Redis
buffers in one Lua call, score with the serving model (in the scorer thread, so the event loop
keeps consuming), build one recommendation per user, hand the records to the producer, store
the latest recommendations for the lookup API. The decisions are the pure modules'
(records, inputs, recommend); the optional features are stages (:mod:`attnrec.stream.core.stage`),
called at their hooks and absent when not configured.

Processing a batch never raises on purpose (faust-streaming's ``take_events`` would ack the
events of a failed batch; a crashed agent stops consuming): transient failures are retried
with backoff until they succeed (a Redis outage pauses consumption), and an event that fails
``max_attempts`` times on its own is dead-lettered as poison. The whole batch is idempotent
(Redis dedupes by offset watermark and event_id), so a retry re-runs it from the start.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from attnrec.errors import TransientError
from attnrec.settings import Settings

from .buffer import RETRY, RedisBuffers
from .metrics import WorkerMetrics
from .model import LoadedModel, ModelWatcher
from .output import Outbox, Output
from .recommend import recommend
from .records import RawRecord, parse_records
from .scoring import Scoring
from .stage import Batch, Stages

__all__ = ["STEPS", "Processor", "where"]

log = logging.getLogger(__name__)

#: The steps of a batch, in order, as stages see them (``Stage.step``): "model" comes twice (the
#: run started, the scores in hand); "send" ends a batch that had events and dead letters only.
STEPS = ("start", "parse", "redis", "inputs", "model", "recommend", "serialize", "store_recs", "send")


class Processor:
    """Everything a batch needs, independent of faust (the agent feeds it RawRecords)."""

    def __init__(self, settings: Settings, buffers: RedisBuffers, metrics: WorkerMetrics, watcher: ModelWatcher | None,
                 stages: Stages | None = None, output: Output | None = None) -> None:  # fmt: skip
        self.s = settings
        self.buffers = buffers
        self.metrics = metrics
        self.watcher = watcher
        self.stages = stages if stages is not None else Stages()
        self.output = output if output is not None else Output(settings, metrics)
        self.scoring = Scoring(settings, metrics)
        self.model: LoadedModel | None = None
        self.batches = 0
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to process
        self.state_error: str | None = None  # Redis lost attnrec's state (stream.app.guard_redis_state)
        #: batches with more users to score than this run the model in the scorer thread (0: all).
        #: A model run inline blocks the loop and the intake with it: at 1,000 events/s inline runs
        #: made a click wait 31 ms (p50) for the worker, against 8.5 ms in the thread (BENCHMARKS.md)
        self.inline_rows = 0
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")  # one model run at a time

    # ------------------------------------------------------------------ model
    def set_model(self, m: LoadedModel | None) -> None:
        self.model = m
        if m is not None:
            self.metrics.model_info.info({"version": m.version})
            self.metrics.model_loaded.set(1)
            log.info("serving model %s", m.version)
        self.stages.swap(m)

    def maybe_swap(self) -> None:
        m = self.watcher.take_pending() if self.watcher is not None else None
        if m is not None:
            old = self.model.version if self.model else None
            self.set_model(m)
            log.info("model swapped between batches: %s -> %s", old, m.version)
        else:
            self.stages.swap(self.model)

    # ------------------------------------------------------------------ batch
    async def process(self, records: Sequence[RawRecord]) -> Outbox:
        """Apply one batch to Redis, score it and enqueue its output records. Never raises
        except on cancellation. The returned :class:`Outbox` still has to be delivered
        (``output.deliver``) before the batch's input offsets may be acknowledged."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self.finish(await self.prepare(records))
            except TransientError as exc:
                self.metrics.retries.labels("transient").inc()
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("batch of %d (%s) failed transiently (attempt %d): %s; retrying in %.2fs",
                            len(records), where(records), attempt, exc, delay)  # fmt: skip
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.retries.labels("error").inc()
                log.exception("batch of %d (%s) failed (attempt %d/%d)", len(records), where(records), attempt, self.s.max_attempts)
                if attempt >= self.s.max_attempts:
                    if len(records) == 1:
                        return await self.output.dead_letter_poison(records[0], self.s.max_attempts, exc)
                    merged = Outbox()
                    for r in records:  # isolate the poison: one event at a time
                        one = await self.process([r])
                        if self.output.txn is not None:  # each in its own transaction, committed in order
                            await self.output.deliver(one)
                            continue
                        merged.extend(one)
                    return merged
                await asyncio.sleep(min(self.s.retry_max_s, 0.05 * 2**attempt))

    async def prepare(self, records: Sequence[RawRecord]) -> Batch:
        """First half of a batch: parse, apply to Redis, build the model inputs and start the
        model run. Raises on failure; the batch's Redis writes are idempotent, so it can be
        re-run from the start."""
        stages = self.stages
        batch = Batch(records, exclude_seen=self.s.exclude_seen)
        stages.step(batch, "start")
        batch.parsed = parse_records(records)
        stages.step(batch, "parse")
        if not batch.parsed.events:
            return batch
        self.maybe_swap()  # between batches: this whole batch is scored by one version
        model = batch.model = self.model
        await stages.begin(batch)
        events = batch.parsed.events
        res = batch.applied = await self.scoring.apply(model, events, self.buffers)
        batch.t1 = time.perf_counter()
        stages.step(batch, "redis")
        if model is not None:
            plan = batch.plan = await self.scoring.plan(model, res, events, self.buffers)
            for rows in plan.parts:
                stages.exclude(batch, rows)
            stages.step(batch, "inputs")
            if sum(len(p.users) for p in plan.parts) > self.inline_rows:
                # onnxruntime releases the GIL: the batch is scored in a thread while the event
                # loop prepares the next batch and consumes
                batch.scoring = asyncio.get_running_loop().run_in_executor(self._scorer, self.scoring.run, model, plan)
            else:
                batch.scoring = _done(self.scoring.run(model, plan))
            stages.step(batch, "model")
        return batch

    async def finish(self, batch: Batch) -> Outbox:
        """Second half: wait for the scores, build one recommendation per user, store the latest
        ones for the lookup API, and hand them and the dead letters to the producer. Raises on
        failure. The returned :class:`Outbox` still has to be delivered."""
        if batch.parsed.events:
            await self._recommend(batch)
        out = await self.output.publish(batch.records, batch.parsed, batch.recs)
        self._done(batch)
        return out

    async def _recommend(self, batch: Batch) -> None:
        s, stages, res = self.s, self.stages, batch.applied
        assert res is not None
        outputs = await batch.scoring if batch.scoring is not None else None
        batch.t2 = time.perf_counter()
        stages.step(batch, "model")
        sources: dict[str, int] = {}
        for (ev, _, _), src, code in zip(batch.parsed.events, batch.parsed.sources, res.codes, strict=True):
            if code != RETRY:  # a producer's retry never triggers: its first copy did
                batch.triggers[ev.user_id] = ev  # the last event of each user is its trigger
                sources[ev.user_id] = src
        rows = None
        if batch.model is not None and outputs is not None:
            rows, outputs = self.scoring.commit(batch.model, batch.plan, outputs)
            batch.rows = rows
        batch.recs = recommend(batch.model, [u for u in res.users if u in batch.triggers], res.raw, batch.triggers,
                               top_k=s.top_k, because_k=s.because_k, exclude_seen=s.exclude_seen, outputs=outputs,
                               inputs=rows, sources=sources, keep_out=batch.keep_out)  # fmt: skip
        await stages.rewrite(batch)
        stages.step(batch, "recommend")
        for r in batch.recs:
            r.data = r.to_json()
        stages.step(batch, "serialize")
        await self.buffers.store_recs({r.user_id: r.data for r in batch.recs})
        stages.step(batch, "store_recs")

    def _done(self, batch: Batch) -> None:
        """The batch is on its way: the stages observe it; metrics (a retried batch counts once)
        and the positions."""
        self.stages.observe(batch)
        self.stages.step(batch, "send")
        m, parsed, res = self.metrics, batch.parsed, batch.applied
        if res is not None:
            n_new = sum(res.applied)
            m.events.inc(len(parsed.events))
            m.events_applied.inc(n_new)
            m.duplicates.inc(len(parsed.events) - n_new)
            m.retries_skipped.inc(res.codes.count(RETRY))
            m.unknown_types.inc(parsed.unknown_types)
            m.recs.inc(len(batch.recs))
            m.fallbacks.inc(sum(1 for r in batch.recs if r.fallback))
            m.redis_ms.observe(1000 * (batch.t1 - batch.t0))
            m.model_ms.observe(1000 * ((batch.t2 or batch.t1) - batch.t1))  # inputs + scoring, overlapped with other work
        for _, _, reason in parsed.dead:
            m.dead.labels(reason).inc()
        m.batch_size.observe(len(batch.records))
        self.batches += 1
        for r in batch.records:
            key = (r.topic, r.partition)
            if r.offset + 1 > self.positions.get(key, -1):
                self.positions[key] = r.offset + 1


def _done(value: object) -> asyncio.Future[object]:
    fut: asyncio.Future[object] = asyncio.get_running_loop().create_future()
    fut.set_result(value)
    return fut


def where(records: Sequence[RawRecord]) -> str:
    if not records:
        return "-"
    r0, r1 = records[0], records[-1]
    return f"{r0.topic}:{r0.partition}@{r0.offset}..{r1.partition}@{r1.offset}"
