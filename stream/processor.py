"""One batch, end to end, independent of faust: :class:`Processor`.

For each batch: parse and validate (bad messages become dead letters), apply to the Redis
buffers in one Lua call, run the model once (in a thread for large batches, so the event loop
keeps consuming), build one recommendation per user, hand the records to the producer and
store the latest recommendations for the lookup API. The decisions are :mod:`attnrec.stream.logic`'s;
this module moves bytes between Redis, the model and the producer, and retries.

Processing a batch never raises on purpose (faust-streaming's ``take_events`` would ack the
events of a failed batch; a crashed agent stops consuming): transient failures are retried
with backoff until they succeed (a Redis outage pauses consumption), and an event that fails
``max_attempts`` times on its own is dead-lettered as poison. The whole batch is idempotent
(Redis dedupes by offset watermark and event_id), so a retry re-runs it from the start.

The same class serves the benchmark's in-process stage profile: :class:`StageTimes` adds up
where a batch's time goes (parse, Redis, inputs, model, recommend, JSON, store), so the hot
path exists once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any, cast

import orjson
from attnrec.stream.buffer import RETRY, Applied, RedisBuffers
from attnrec.stream.incremental import Incremental, Plan
from attnrec.stream.live import LiveLayer
from attnrec.stream.logic import (
    TIMING_HEADER,
    ModelInputs,
    Parsed,
    RawRecord,
    build_inputs,
    dlq_reason,
    parse_records,
    recommend,
    timing_header,
)
from attnrec.stream.metrics import WorkerMetrics
from attnrec.stream.model import LoadedModel, ModelWatcher
from attnrec.stream.sender import Outbox, SendFn
from attnrec.stream.transactions import FencedError, TransactionalSender

from attnrec.errors import TransientError
from attnrec.events import ClickEvent, dlq_envelope
from attnrec.schemas import header as schema_header
from attnrec.settings import Settings

__all__ = ["INLINE_SCORING_MAX_ROWS", "STAGES", "StageTimes", "Prepared", "Processor", "where"]

log = logging.getLogger(__name__)

#: Batches with at most this many users to score run the model on the event loop; larger ones
#: in the scorer thread. 0: every batch in the thread. A model run inline blocks the loop, and
#: with it the intake of the next events: with batches of ~10 at 1,000 events/s inline runs
#: made the click wait 31 ms (p50) before the worker took it, against 8.5 ms with every run
#: in the thread (onnxruntime releases the GIL); end-to-end p50 57 -> 31 ms (docs/BENCHMARKS.md).
INLINE_SCORING_MAX_ROWS = 0
#: The steps of a batch, in order, as :class:`StageTimes` reports them.
STAGES = ("parse", "redis", "inputs", "model", "recommend", "serialize", "store_recs")
#: The ``attnrec-schema`` header of every record produced (``recs/1``, ``clicks.dlq/1``:
#: docs/schemas/README.md), computed once; the lists are shared and never changed.
RECS_SCHEMA, DLQ_SCHEMA = schema_header("recs"), schema_header("clicks.dlq")
_RECS_HEADERS, _DLQ_HEADERS = [RECS_SCHEMA], [DLQ_SCHEMA]


class StageTimes:
    """Wall and thread-CPU seconds per step of a batch, summed over batches (the benchmark's
    stage profile). :meth:`lap` charges the time since the previous lap to a step; the
    processor laps only when a :class:`StageTimes` is attached, so serving pays nothing."""

    def __init__(self) -> None:
        self.wall = dict.fromkeys(STAGES, 0.0)
        self.cpu = dict.fromkeys(STAGES, 0.0)
        self.events = 0
        self._t = self._c = 0.0

    def start(self) -> None:
        self._t, self._c = time.perf_counter(), time.thread_time()

    def lap(self, stage: str) -> None:
        t, c = time.perf_counter(), time.thread_time()
        self.wall[stage] += t - self._t
        self.cpu[stage] += c - self._c
        self._t, self._c = t, c

    def reset(self) -> None:
        self.__init__()  # type: ignore[misc]


@dataclass
class Prepared:
    """A batch between :meth:`Processor.prepare` and :meth:`Processor.finish`."""

    records: Sequence[RawRecord]
    parsed: Parsed
    t0: float
    t1: float = 0.0
    milestones: list[float] = dc_field(default_factory=list)  # epoch ms: start, Redis done, model done (timing headers)
    model: LoadedModel | None = None
    res: Applied | None = None
    inputs: ModelInputs | None = None
    scoring: asyncio.Future[Any] | None = None  # the model run in the scorer thread
    outputs: Any = None  # or its result, when scored inline
    plan: Plan | None = None  # an incremental model's split between its graphs


class Processor:
    """Everything a batch needs, independent of faust (the agent feeds it RawRecords)."""

    def __init__(self, settings: Settings, buffers: RedisBuffers, metrics: WorkerMetrics, watcher: ModelWatcher) -> None:
        self.s = settings
        self.buffers = buffers
        self.metrics = metrics
        self.watcher = watcher
        self.model: LoadedModel | None = None
        self.send: SendFn | None = None  # async (topic, key, value) -> delivery future
        self.batches = 0
        self.positions: dict[tuple[str, int], int] = {}  # (topic, partition) -> next offset to process
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scorer")  # one model run at a time
        self._lag_labels: set[str] = set()
        self.inline_rows = INLINE_SCORING_MAX_ROWS  # larger batches are scored in the scorer thread
        self.stages: StageTimes | None = None  # attach one to profile the steps (benchmark)
        self.incremental = Incremental(settings, metrics)  # an incremental model's key/value caches
        self.txn: TransactionalSender | None = None  # exactly-once: the batch's output in transactions
        self.state_error: str | None = None  # Redis lost attnrec's state (stream.app.guard_redis_state)
        # availability, policy, trending, online evaluation (the benchmark's null agent has no Redis and
        # never reaches it)
        self.live = LiveLayer(settings, buffers.r, metrics) if buffers is not None else cast(LiveLayer, None)

    # ------------------------------------------------------------------ model
    def set_model(self, m: LoadedModel | None) -> None:
        self.model = m
        if m is not None:
            self.metrics.model_info.info({"version": m.version})
            self.metrics.model_loaded.set(1)
            log.info("serving model %s", m.version)

    def maybe_swap(self) -> None:
        shadow = self.watcher.take_pending_shadow()
        if shadow is not None and self.live is not None:
            self.live.set_shadow(shadow[0])
        m = self.watcher.take_pending()
        if m is not None:
            old = self.model.version if self.model else None
            self.set_model(m)
            log.info("model swapped between batches: %s -> %s", old, m.version)

    # ------------------------------------------------------------------ batch
    async def process(self, records: Sequence[RawRecord]) -> Outbox:
        """Apply one batch to Redis, score it and enqueue its output records. Never raises
        except on cancellation. The returned :class:`Outbox` still has to be delivered
        (:meth:`deliver`) before the batch's input offsets may be acknowledged."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._process_once(records)
            except TransientError as exc:
                self.metrics.retries.labels("transient").inc()
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning(
                    "batch of %d (%s) failed transiently (attempt %d): %s; retrying in %.2fs",
                    len(records), where(records), attempt, exc, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.retries.labels("error").inc()
                log.exception("batch of %d (%s) failed (attempt %d/%d)", len(records), where(records), attempt, self.s.max_attempts)
                if attempt >= self.s.max_attempts:
                    if len(records) == 1:
                        await self._dead_letter_poison(records[0], exc)
                        return Outbox()
                    merged = Outbox()
                    for r in records:  # isolate the poison: one event at a time
                        one = await self.process([r])
                        if self.txn is not None:  # each in its own transaction, committed in order
                            await self.deliver(one)
                            continue
                        merged.extend(one)
                    return merged
                await asyncio.sleep(min(self.s.retry_max_s, 0.05 * 2**attempt))

    async def _process_once(self, records: Sequence[RawRecord]) -> Outbox:
        return await self.finish(await self.prepare(records))

    async def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """First half of a batch: parse, apply to Redis, build the model inputs and start the
        model run (in the scorer thread for large batches). Raises on failure; the batch's
        Redis writes are idempotent, so it can be re-run from the start."""
        s, st = self.s, self.stages
        t0 = time.perf_counter()
        if st is not None:
            st.start()
        parsed = parse_records(records)
        prep = Prepared(records=records, parsed=parsed, t0=t0)
        if s.timing_headers:
            prep.milestones.append(time.time() * 1000)
        if st is not None:
            st.lap("parse")
        if not parsed.events:
            return prep
        self.maybe_swap()  # between batches: this whole batch is scored by one version
        await self.live.refresh()  # a status change applied by any worker is in this batch
        model = prep.model = self.model
        if model is not None and model.incremental:
            return await self._prepare_incremental(prep, model)
        window = model.max_len + 1 if model is not None else 0  # +1: the oldest kept event's time gap
        ret = max(window, s.exclude_window if s.exclude_seen else 0)
        res = prep.res = await self.buffers.apply(parsed.events, return_len=ret)
        prep.t1 = time.perf_counter()
        if s.timing_headers:
            prep.milestones.append(time.time() * 1000)
        if st is not None:
            st.lap("redis")
        if model is not None:
            inputs = prep.inputs = build_inputs(model, res.raw, res.users, exclude_seen=s.exclude_seen,
                                                exclude_window=s.exclude_window)  # fmt: skip
            self.live.exclude(model, inputs)
            if st is not None:
                st.lap("inputs")
            if len(inputs.users) > self.inline_rows:
                # onnxruntime releases the GIL: a large batch is scored in a thread while the
                # event loop prepares the next batch and consumes
                prep.scoring = asyncio.get_running_loop().run_in_executor(
                    self._scorer, model.run, inputs.items, inputs.types, inputs.gaps, inputs.exclude
                )
            elif inputs.users:  # a small batch scores in well under a millisecond: no hand-over
                prep.outputs = model.run(inputs.items, inputs.types, inputs.gaps, inputs.exclude)
            if st is not None:
                st.lap("model")
        return prep

    async def _prepare_incremental(self, prep: Prepared, model: LoadedModel) -> Prepared:
        """:meth:`prepare` for an incremental model: Redis returns a cached user's new entries
        only; hits go to the step graph, misses to the full graph (:mod:`attnrec.stream.incremental`)."""
        s, st, inc = self.s, self.stages, self.incremental
        lengths = inc.lengths(model, prep.parsed.events)
        res = prep.res = await self.buffers.apply(prep.parsed.events, return_len=inc.full_len(model), user_len=lengths)
        plan = prep.plan = await inc.plan(model, res, prep.parsed.events, lengths, self.buffers)
        self.live.exclude(model, plan.full)
        self.live.exclude(model, plan.step)
        prep.t1 = time.perf_counter()
        if s.timing_headers:
            prep.milestones.append(time.time() * 1000)
        if st is not None:
            st.lap("redis")
            st.lap("inputs")  # the inputs are built with the plan: they count as Redis here
        if len(plan.full.users) + len(plan.step.users) > self.inline_rows:
            prep.scoring = asyncio.get_running_loop().run_in_executor(self._scorer, inc.score, model, plan)
        else:
            prep.outputs = inc.score(model, plan)
        if st is not None:
            st.lap("model")
        return prep

    async def finish(self, prep: Prepared) -> Outbox:
        """Second half: wait for the scores, build one recommendation per user, hand them and
        the dead letters to the producer and store the latest recommendations. Raises on
        failure. The returned :class:`Outbox` still has to be delivered."""
        out = Outbox()
        if self.txn is None:
            return await self._finish(prep, out)
        await self.txn.begin(out.cover(prep.records))  # exactly-once: the offsets its transactions commit
        try:
            return await self._finish(prep, out)
        except BaseException:
            await self.txn.abort(out.offsets)
            raise

    async def _finish(self, prep: Prepared, out: Outbox) -> Outbox:
        s, m, parsed, st = self.s, self.metrics, prep.parsed, self.stages
        for (key, env, reason), src in zip(parsed.dead, parsed.dead_sources, strict=True):
            log.warning("dead letter (%s): %s", reason, orjson.loads(env)["error"])
            await out.send(self.send, s.dlq_topic, key, env, _DLQ_HEADERS, partition=prep.records[src].partition,
                           offset=prep.records[src].offset)
        if parsed.events:
            res = prep.res
            assert res is not None
            outputs = await prep.scoring if prep.scoring is not None else prep.outputs
            t2 = time.perf_counter()
            if s.timing_headers:
                prep.milestones.append(time.time() * 1000)
            if st is not None:
                st.lap("model")
            triggers: dict[str, ClickEvent] = {}
            sources: dict[str, int] = {}
            for (ev, _, _), src, code in zip(parsed.events, parsed.sources, res.codes, strict=True):
                if code != RETRY:  # a producer's retry never triggers: its first copy did
                    triggers[ev.user_id] = ev  # the last event of each user is its trigger
                    sources[ev.user_id] = src
            events = [ev for ev, _, _ in parsed.events]
            self.live.observe(events)
            rows: Any = prep.inputs
            if prep.plan is not None and prep.model is not None:
                rows, outputs = self.incremental.commit(prep.model, prep.plan, outputs)
            recs = recommend(
                prep.model, [u for u in res.users if u in triggers], res.raw, triggers,
                top_k=s.top_k, because_k=s.because_k, exclude_seen=s.exclude_seen,
                outputs=outputs, inputs=rows,
            )  # fmt: skip
            fresh = None
            if self.live.shadow.model is not None:  # a shadow's per-user caches follow Redis' #seq
                new = Counter(ev.user_id for (ev, _, _), a in zip(parsed.events, res.applied, strict=True) if a)
                fresh = {u: (res.seq.get(u, 0), new[u]) for u in triggers}
            await self.live.finish(prep.model, recs, res.raw, rows, fresh)
            if st is not None:
                st.lap("recommend")
            payloads = {r.user_id: r.to_json() for r in recs}
            now = time.time() * 1000
            for r in recs:
                src = prep.records[sources[r.user_id]]
                hdrs = ([RECS_SCHEMA, (TIMING_HEADER, timing_header(src, prep.milestones, now))] if s.timing_headers
                        else _RECS_HEADERS)
                await out.send(self.send, s.recs_topic, r.user_id.encode(), payloads[r.user_id], hdrs,
                               partition=src.partition, offset=src.offset)
            if st is not None:
                st.lap("serialize")
            await self.buffers.store_recs(payloads)
            self.live.record(events)
            self.live.after_send()
            t3 = time.perf_counter()
            if st is not None:
                st.lap("store_recs")
                st.events += len(prep.records)
            # metrics only once the batch is done (a retried batch is counted once)
            n_new = sum(res.applied)
            m.events.inc(len(parsed.events))
            m.events_applied.inc(n_new)
            m.duplicates.inc(len(parsed.events) - n_new)
            m.retries_skipped.inc(res.codes.count(RETRY))
            m.unknown_types.inc(parsed.unknown_types)
            m.recs.inc(len(recs))
            m.fallbacks.inc(sum(1 for r in recs if r.payload["fallback"]))
            m.redis_ms.observe(1000 * (prep.t1 - prep.t0))
            m.model_ms.observe(1000 * (t2 - prep.t1))  # inputs + scoring, overlapped with other work
            out.enqueue_ms = 1000 * (t3 - t2)
            out.event_ts = [r.payload["event_ts"] for r in recs]
        for _, _, reason in parsed.dead:
            m.dead.labels(reason).inc()
        m.batch_size.observe(len(prep.records))
        self.batches += 1
        for r in prep.records:
            key = (r.topic, r.partition)
            if r.offset + 1 > self.positions.get(key, -1):
                self.positions[key] = r.offset + 1
        return out

    async def deliver(self, out: Outbox) -> bool:
        """Wait until the broker has every record of ``out``; re-send what failed, with
        backoff, until it is delivered. Exactly-once: commit the batch's transactions (a failed
        commit is aborted, and the records are sent again in new ones with the same offsets).
        Returns False when the batch's partitions are another worker's now (its output void,
        its events not to be acked). Never raises except on cancellation."""
        t0 = time.perf_counter()
        if self.txn is not None:
            if not await self._commit(out):
                return False
        attempt = 0
        while self.txn is None:
            failed = await out.wait()
            if not failed:
                break
            attempt += 1
            self.metrics.retries.labels("transient").inc()
            delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
            log.warning("%d of %d produced records not delivered (attempt %d); re-sending in %.2fs",
                        len(failed), len(out.records), attempt, delay)  # fmt: skip
            await asyncio.sleep(delay)
            try:
                await out.resend(self.send, failed)
            except TransientError as exc:
                log.warning("re-send failed: %s", exc)
        self.metrics.produce_ms.observe(out.enqueue_ms + 1000 * (time.perf_counter() - t0))
        now = time.time() * 1000
        for ts in out.event_ts:
            self.metrics.e2e_ms.observe(max(0.0, now - ts))
        return True

    async def _commit(self, out: Outbox) -> bool:
        """Commit ``out``'s transactions, one input partition at a time; a failed one is redone
        in a new transaction until it commits or its part of the batch is void (the partition
        is another worker's). True when every part committed."""
        assert self.txn is not None
        await asyncio.gather(*(self._commit_part(out, part) for part in sorted(out.offsets)))
        if out.void:
            self.metrics.void_parts.inc(len(out.void))
            log.info("batch's part(s) in partition(s) %s void: another worker processes or processed them", sorted(out.void))
        return not out.void

    async def _commit_part(self, out: Outbox, part: int) -> None:
        """One partition's transaction of ``out`` (the partitions' commits run side by side)."""
        assert self.txn is not None
        attempt = 0
        while True:
            try:
                await self.txn.commit_one(out, part)
                return
            except (TransientError, FencedError) as exc:
                attempt += 1
                if isinstance(exc, FencedError):
                    self.metrics.fenced.inc()
                self.metrics.retries.labels("transient").inc()
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("transaction of partition %d failed (attempt %d): %s; its %d records again in %.2fs",
                            part, attempt, exc, len(out.indices(part)), delay)  # fmt: skip
                await asyncio.sleep(delay)
                try:
                    await self.txn.begin(out, [part])
                    if part not in out.void:
                        await out.resend(self.send, out.indices(part))
                except (TransientError, FencedError) as e:
                    log.warning("re-send in a new transaction failed: %s", e)
                    await self.txn.abort([part])

    def update_lag(self, assignment: Any, highwater: Any) -> None:
        """Set ``attnrec_consumer_lag{partition}`` = highwater - next offset to process, for each
        assigned input partition this worker has processed since it started; drop the others."""
        live: set[str] = set()
        for tp in assignment:
            pos = self.positions.get((tp.topic, tp.partition))
            if tp.topic != self.s.clicks_topic or pos is None:
                continue
            try:
                hw = highwater(tp)
            except Exception:  # not assigned any more, or no fetch response yet
                hw = None
            if hw is None:
                continue
            label = str(tp.partition)
            live.add(label)
            self.metrics.lag.labels(label).set(max(0, hw - pos))
        for label in self._lag_labels - live:
            self.metrics.lag.remove(label)
        self._lag_labels = live

    async def _dead_letter_poison(self, r: RawRecord, exc: BaseException) -> None:
        msg = f"poison: processing failed {self.s.max_attempts} times: {type(exc).__name__}: {exc}"[:1000]
        env = dlq_envelope(msg, r.value, r.key, r.topic, r.partition, r.offset, int(time.time() * 1000))
        log.error("dead-lettering poison event at %s:%d@%d: %s", r.topic, r.partition, r.offset, msg)
        out = Outbox()
        while True:
            if self.txn is not None:
                out.cover([r])
            try:
                if self.txn is not None:
                    await self.txn.begin(out)
                await out.send(self.send, self.s.dlq_topic, r.key, env, _DLQ_HEADERS, partition=r.partition,
                               offset=r.offset)
                break
            except TransientError as e:
                if self.txn is not None:
                    await self.txn.abort(out.offsets)
                out = Outbox()
                log.warning("cannot dead-letter yet: %s", e)
                await asyncio.sleep(1.0)
        await self.deliver(out)
        self.metrics.dead.labels(dlq_reason(msg)).inc()


def where(records: Sequence[RawRecord]) -> str:
    if not records:
        return "-"
    r0, r1 = records[0], records[-1]
    return f"{r0.topic}:{r0.partition}@{r0.offset}..{r1.partition}@{r1.offset}"


