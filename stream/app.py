"""The Faust worker: a thin agent over :mod:`stream.logic`.

One agent, concurrency 1, consumes ``clicks`` (``noack_take(B, within=W)``) into a
:class:`Batcher`, whose task processes batches of up to B events in order. For each batch:
parse and validate (bad messages to ``clicks.dlq``), apply to the Redis buffers in one Lua
call, run the model once (in a thread for large batches, while the next batch is applied),
produce one recommendation per user and store it for the lookup API. The batch's input events are acked,
and so become committable, only once the broker has acknowledged every record it produced.

Processing a batch never raises on purpose (faust-streaming's ``take_events`` would ack the
events of a failed batch; a crashed agent stops consuming): transient failures are retried
with backoff until they succeed (a Redis outage pauses consumption), and an event that fails
``max_attempts`` times on its own is dead-lettered as poison. The whole batch is idempotent
(Redis dedupes by offset watermark and event_id), so a retry re-runs it from the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from dataclasses import field as dc_field
from typing import Any

import faust
import orjson
import redis.asyncio as aioredis
from faust.web import Request, Response, View

from attnrec.errors import AttnrecError, TransientError
from attnrec.settings import Settings
from stream.buffer import Applied, RedisBuffers
from stream.logic import ModelInputs, Parsed, RawRecord, build_inputs, dlq_reason, parse_records, recommend
from stream.metrics import WorkerMetrics
from stream.model import LoadedModel, ModelWatcher
from stream.schema import ClickEvent, dlq_envelope

__all__ = ["Processor", "create_app"]

log = logging.getLogger(__name__)


#: Batches with at most this many users to score run the model on the event loop; larger ones
#: in the scorer thread (a thread hand-over costs more than scoring a few rows).
INLINE_SCORING_MAX_ROWS = 16

SendFn = Callable[[str, "bytes | None", bytes], Awaitable["asyncio.Future[Any]"]]


@dataclass
class Outbox:
    """The records one batch produced, and the broker's delivery futures for them."""

    records: list[tuple[str, bytes | None, bytes]] = dc_field(default_factory=list)
    futures: list[asyncio.Future[Any]] = dc_field(default_factory=list)
    enqueue_ms: float = 0.0
    event_ts: list[int] = dc_field(default_factory=list)

    async def send(self, send: SendFn, topic: str, key: bytes | None, value: bytes) -> None:
        try:
            fut = await send(topic, key, value)
        except Exception as exc:  # aiokafka errors while enqueuing (broker down, buffer full…)
            raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc
        self.records.append((topic, key, value))
        self.futures.append(fut)

    async def wait(self) -> list[int]:
        """Indices of the records whose delivery failed."""
        if not self.futures:
            return []
        results = await asyncio.gather(*self.futures, return_exceptions=True)
        return [i for i, r in enumerate(results) if isinstance(r, BaseException)]

    async def resend(self, send: SendFn, indices: list[int]) -> None:
        for i in indices:
            topic, key, value = self.records[i]
            try:
                self.futures[i] = await send(topic, key, value)
            except Exception as exc:
                raise TransientError(f"kafka produce to {topic}: {type(exc).__name__}: {exc}") from exc

    def extend(self, other: Outbox) -> None:
        self.records += other.records
        self.futures += other.futures
        self.enqueue_ms += other.enqueue_ms
        self.event_ts += other.event_ts


@dataclass
class Prepared:
    """A batch between :meth:`Processor.prepare` and :meth:`Processor.finish`."""

    records: Sequence[RawRecord]
    parsed: Parsed
    t0: float
    t1: float = 0.0
    model: LoadedModel | None = None
    res: Applied | None = None
    inputs: ModelInputs | None = None
    scoring: asyncio.Future[Any] | None = None  # the model run in the scorer thread
    outputs: Any = None  # or its result, when scored inline


class KafkaSender:
    """Our own aiokafka producer for ``recs`` and ``clicks.dlq``: faust's ``topic.send`` cost
    ~5x more CPU per record here (docs/BENCHMARKS.md). Started on first use; key-hash
    partitioning is Kafka's default (murmur2), so a user's recommendations stay in order."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self._p: Any = None
        self._lock = asyncio.Lock()

    async def _producer(self) -> Any:
        if self._p is None:
            async with self._lock:
                if self._p is None:
                    from aiokafka import AIOKafkaProducer

                    p = AIOKafkaProducer(
                        bootstrap_servers=self.s.kafka_bootstrap,
                        acks="all",
                        linger_ms=2,
                        max_batch_size=512 * 1024,
                        request_timeout_ms=30000,
                        **_aiokafka_security(self.s),
                    )
                    try:
                        await p.start()
                    except Exception:
                        await p.stop()
                        raise
                    self._p = p
        return self._p

    async def send(self, topic: str, key: bytes | None, value: bytes) -> asyncio.Future[Any]:
        p = await self._producer()
        return await p.send(topic, value=value, key=key)  # type: ignore[no-any-return]

    async def stop(self) -> None:
        if self._p is not None:
            p, self._p = self._p, None
            await p.stop()


def _aiokafka_security(s: Settings) -> dict[str, Any]:
    kw = s.kafka_client_kwargs()
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        kw["ssl_context"] = ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
    return kw


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

    # ------------------------------------------------------------------ model
    def set_model(self, m: LoadedModel | None) -> None:
        self.model = m
        if m is not None:
            self.metrics.model_info.info({"version": m.version})
            self.metrics.model_loaded.set(1)
            log.info("serving model %s", m.version)

    def maybe_swap(self) -> None:
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
                    len(records), _where(records), attempt, exc, delay,
                )  # fmt: skip
                await asyncio.sleep(delay)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.metrics.retries.labels("error").inc()
                log.exception("batch of %d (%s) failed (attempt %d/%d)", len(records), _where(records), attempt, self.s.max_attempts)
                if attempt >= self.s.max_attempts:
                    if len(records) == 1:
                        await self._dead_letter_poison(records[0], exc)
                        return Outbox()
                    merged = Outbox()
                    for r in records:  # isolate the poison: one event at a time
                        merged.extend(await self.process([r]))
                    return merged
                await asyncio.sleep(min(self.s.retry_max_s, 0.05 * 2**attempt))

    async def _process_once(self, records: Sequence[RawRecord]) -> Outbox:
        return await self.finish(await self.prepare(records))

    async def prepare(self, records: Sequence[RawRecord]) -> Prepared:
        """First half of a batch: parse, apply to Redis, build the model inputs and start the
        model run (in the scorer thread for large batches). Raises on failure; the batch's
        Redis writes are idempotent, so it can be re-run from the start."""
        s = self.s
        t0 = time.perf_counter()
        parsed = parse_records(records)
        prep = Prepared(records=records, parsed=parsed, t0=t0)
        if not parsed.events:
            return prep
        self.maybe_swap()  # between batches: this whole batch is scored by one version
        model = prep.model = self.model
        window = model.max_len + 1 if model is not None else 0  # +1: the oldest kept event's time gap
        ret = max(window, s.exclude_window if s.exclude_seen else 0)
        res = prep.res = await self.buffers.apply(parsed.events, return_len=ret)
        prep.t1 = time.perf_counter()
        if model is not None:
            inputs = prep.inputs = build_inputs(model, res.raw, res.users, exclude_seen=s.exclude_seen,
                                                exclude_window=s.exclude_window)  # fmt: skip
            if len(inputs.users) > INLINE_SCORING_MAX_ROWS:
                # onnxruntime releases the GIL: a large batch is scored in a thread while the
                # event loop prepares the next batch and consumes
                prep.scoring = asyncio.get_running_loop().run_in_executor(
                    self._scorer, model.run, inputs.items, inputs.types, inputs.gaps, inputs.exclude
                )
            elif inputs.users:  # a small batch scores in well under a millisecond: no hand-over
                prep.outputs = model.run(inputs.items, inputs.types, inputs.gaps, inputs.exclude)
        return prep

    async def finish(self, prep: Prepared) -> Outbox:
        """Second half: wait for the scores, build one recommendation per user, hand them and
        the dead letters to the producer and store the latest recommendations. Raises on
        failure. The returned :class:`Outbox` still has to be delivered."""
        s, m, parsed = self.s, self.metrics, prep.parsed
        out = Outbox()
        for key, env, reason in parsed.dead:
            log.warning("dead letter (%s): %s", reason, orjson.loads(env)["error"])
            await out.send(self.send, s.dlq_topic, key, env)
        if parsed.events:
            res = prep.res
            assert res is not None
            outputs = await prep.scoring if prep.scoring is not None else prep.outputs
            t2 = time.perf_counter()
            triggers: dict[str, ClickEvent] = {}
            for ev, _, _ in parsed.events:
                triggers[ev.user_id] = ev  # the last event of each user is its trigger
            recs = recommend(
                prep.model, res.users, res.raw, triggers,
                top_k=s.top_k, because_k=s.because_k, exclude_seen=s.exclude_seen,
                outputs=outputs, inputs=prep.inputs,
            )  # fmt: skip
            payloads = {r.user_id: r.to_json() for r in recs}
            for r in recs:
                await out.send(self.send, s.recs_topic, r.user_id.encode(), payloads[r.user_id])
            await self.buffers.store_recs(payloads)
            t3 = time.perf_counter()
            # metrics only once the batch is done (a retried batch is counted once)
            n_new = sum(res.applied)
            m.events.inc(len(parsed.events))
            m.events_applied.inc(n_new)
            m.duplicates.inc(len(parsed.events) - n_new)
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

    async def deliver(self, out: Outbox) -> None:
        """Wait until the broker has every record of ``out``; re-send what failed, with
        backoff, until it is delivered. Never raises except on cancellation."""
        t0 = time.perf_counter()
        attempt = 0
        while True:
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
            try:
                await out.send(self.send, self.s.dlq_topic, r.key, env)
                break
            except TransientError as e:
                log.warning("cannot dead-letter yet: %s", e)
                await asyncio.sleep(1.0)
        await self.deliver(out)
        self.metrics.dead.labels(dlq_reason(msg)).inc()


class Batcher:
    """Batches for one agent: a FIFO of taken events and one task that processes them.

    The agent hands over (:meth:`put`) what faust's take yields and goes straight back to
    taking; the task takes up to ``batch_size`` pending events at a time, so under load a batch is
    everything that arrived while the previous one was scored (adaptive batching), and at low
    load it is the few events of the last take window. Batches go through a two-stage pipeline
    in arrival order (:meth:`_run`: Redis applies and recommendations in batch order, so
    per-user order holds); their deliveries overlap with the next batches, at most
    ``max_inflight`` at once, and each batch's events are acked only once delivered.
    ``put`` blocks while ``max_pending`` events wait (backpressure on the consumer).
    """

    def __init__(self, proc: Processor, ack: Callable[[Any], Awaitable[Any]], batch_size: int, max_inflight: int,
                 max_pending: int, wait_s: float = 0.0) -> None:  # fmt: skip
        self.proc = proc
        self.wait_s = wait_s  # a partial batch waits this long (from its first event) to fill
        self._first_t = 0.0
        self._full = asyncio.Event()
        self.ack = ack
        self.batch_size = batch_size
        self.max_inflight = max_inflight
        self.max_pending = max_pending
        self._pending: list[Any] = []
        self._have = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()
        self._task = asyncio.ensure_future(self._run())

    async def put(self, events: Sequence[Any]) -> None:
        if self._task.done():  # the batch task died: surface it, so the supervisor restarts the agent
            self._task.result()
            raise RuntimeError("batch task ended")
        if not self._pending:
            self._first_t = time.monotonic()
        self._pending.extend(events)
        self._have.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()
        while len(self._pending) >= self.max_pending and not self._task.done():
            self._room.clear()
            await self._room.wait()

    async def _run(self) -> None:
        """Under a backlog, two batches in flight: while batch N is scored in the scorer
        thread, batch N+1 (a full one) is parsed, applied to Redis and its inputs built on the
        event loop; then N is finished (recommendations, produce). Redis applies and
        recommendations stay in batch order. A batch whose fast path fails at any step is
        re-run whole by :meth:`Processor.process` (retries, backoff, poison isolation) before
        anything after it is applied."""
        prev: tuple[list[Any], list[RawRecord], Prepared | None] | None = None
        while True:
            if prev is not None and (self._stopping or len(self._pending) < self.batch_size):
                # overlap only with a full batch: a partial one would only shrink the batches
                # (it grows while this one finishes), and with them the amortisation
                await self._complete(*prev)
                prev = None
                continue
            if self._stopping:
                break
            if prev is None:
                await self._have.wait()
                if self._stopping or not self._pending:
                    continue
                linger = self._first_t + self.wait_s - time.monotonic()
                if linger > 0 and len(self._pending) < self.batch_size:
                    # up to B events or W after the first: a batch of a few events pays the
                    # whole per-batch cost (two Lua calls, a model run, a delivery), which
                    # near saturation costs more latency than the wait
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._full.wait(), linger)
            events = self._take()
            records = [
                RawRecord(e.message.topic, e.message.partition, e.message.offset, e.message.key, e.message.value,
                          int(e.message.timestamp * 1000))
                for e in events
            ]  # fmt: skip
            try:
                prep: Prepared | None = await self.proc.prepare(records)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("batch of %d (%s) failed on the fast path (%s: %s); re-running it on its own",
                            len(records), _where(records), type(exc).__name__, exc)  # fmt: skip
                prep = None
            if prev is not None:
                await self._complete(*prev)
                prev = None
            if prep is None:
                await self._complete(events, records, None)
            else:
                prev = (events, records, prep)

    def _take(self) -> list[Any]:
        events = self._pending[: self.batch_size]
        del self._pending[: self.batch_size]
        self._first_t = time.monotonic()  # leftovers (more than B were pending) start a new wait
        if len(self._pending) < self.batch_size:
            self._full.clear()
        if not self._pending:
            self._have.clear()
        if len(self._pending) < self.max_pending:
            self._room.set()
        return events

    async def _complete(self, events: list[Any], records: list[RawRecord], prep: Prepared | None) -> None:
        out: Outbox | None = None
        if prep is not None:
            try:
                out = await self.proc.finish(prep)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("batch of %d (%s) failed on the fast path (%s: %s); re-running it on its own",
                            len(records), _where(records), type(exc).__name__, exc)  # fmt: skip
        if out is None:
            out = await self.proc.process(records)  # never raises except on cancellation
        t = asyncio.ensure_future(self._deliver_then_ack(out, events))
        self._inflight.add(t)
        t.add_done_callback(self._inflight.discard)
        if len(self._inflight) >= self.max_inflight:  # a slow broker slows consumption
            await asyncio.wait(self._inflight, return_when=asyncio.FIRST_COMPLETED)

    async def _deliver_then_ack(self, out: Outbox, events: list[Any]) -> None:
        await self.proc.deliver(out)
        for e in events:
            await self.ack(e)

    async def close(self) -> None:
        """Finish the batch in hand and its deliveries (a stop request, e.g. SIGTERM); events
        still pending stay unacked and are redelivered to whoever owns the partition next.
        Exits the process hard if that cannot happen within 30 s each."""
        self._stopping = True
        self._have.set()
        if not self._task.done():
            log.info("stop requested: finishing the batch in hand (%d more events pending stay unacked)", len(self._pending))
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout=30)
            except TimeoutError:
                log.error("batch did not finish within 30 s of stop; exiting without acking it")
                os._exit(3)
        if self._inflight:
            log.info("waiting for %d batches' deliveries before stopping", len(self._inflight))
            _, pending = await asyncio.wait(self._inflight, timeout=30)
            if pending:
                log.error("deliveries did not finish within 30 s of stop; exiting without acking them")
                os._exit(3)


def _where(records: Sequence[RawRecord]) -> str:
    if not records:
        return "-"
    r0, r1 = records[0], records[-1]
    return f"{r0.topic}:{r0.partition}@{r0.offset}..{r1.partition}@{r1.offset}"


def _faust_credentials(s: Settings) -> Any:
    if s.kafka_security_protocol == "PLAINTEXT":
        return None
    ssl_ctx = None
    if s.kafka_security_protocol in ("SSL", "SASL_SSL"):
        import ssl

        ssl_ctx = ssl.create_default_context(cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None)
    if s.kafka_security_protocol.startswith("SASL"):
        pw = s.kafka_password.get_secret_value() if s.kafka_password else ""
        if s.kafka_sasl_mechanism == "PLAIN":
            return faust.SASLCredentials(username=s.kafka_username, password=pw, ssl_context=ssl_ctx)
        from faust.types.auth import SASLMechanism

        mech = SASLMechanism.SCRAM_SHA_256 if s.kafka_sasl_mechanism == "SCRAM-SHA-256" else SASLMechanism.SCRAM_SHA_512
        return faust.SASLCredentials(username=s.kafka_username, password=pw, ssl_context=ssl_ctx, mechanism=mech)
    return faust.SSLCredentials(ssl_ctx)


def redis_client(s: Settings) -> aioredis.Redis:
    return aioredis.Redis.from_url(
        s.redis_url,
        username=s.redis_username,
        password=s.redis_password.get_secret_value() if s.redis_password else None,
        socket_timeout=s.redis_timeout_s,
        socket_connect_timeout=s.redis_timeout_s,
        health_check_interval=10,
    )


def create_app(settings: Settings) -> faust.App:
    """Build the faust app, its agent and its web views from one settings object."""
    s = settings
    (s.home / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        s.group_id,
        broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap.split(",")],
        broker_credentials=_faust_credentials(s),
        store="memory://",
        datadir=str(s.home / "faust" / f"{s.group_id}-data"),
        topic_partitions=s.partitions,
        topic_disable_leader=True,
        web_enabled=True,
        web_host=s.web_host,
        web_port=s.web_port,
        web_in_thread=False,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=s.kafka_session_timeout_s,
        broker_heartbeat_interval=s.kafka_heartbeat_s,
        broker_commit_every=1000,
        producer_linger=0.002,
        stream_buffer_maxsize=max(4096, 4 * s.batch_size),
        agent_supervisor="mode.OneForOneSupervisor",
    )
    metrics = WorkerMetrics()
    watcher = ModelWatcher(
        s.registry_dir,
        threads=s.ort_threads,
        poll_s=s.reload_poll_s,
        on_event=lambda kind, version, why: metrics.reloads.labels(kind).inc(),
    )
    buffers = RedisBuffers(
        redis_client(s), max_len=s.buffer_len, ttl_s=s.buffer_ttl_s, dedupe_window=s.dedupe_window
    )
    proc = Processor(s, buffers, metrics, watcher)
    clicks = app.topic(s.clicks_topic, partitions=s.partitions, key_type=bytes, value_type=bytes)
    sender = KafkaSender(s)
    proc.send = sender.send
    app.attnrec = proc  # type: ignore[attr-defined]
    app.attnrec_metrics = metrics  # type: ignore[attr-defined]

    @app.task
    async def _load_model() -> None:
        # load off the event loop's hot path; then poll CURRENT in a thread
        m = await asyncio.get_running_loop().run_in_executor(None, watcher.load_now)
        if m is not None and proc.model is None:
            proc.set_model(m)
        elif m is None:
            log.warning("no model promoted in %s yet: serving popularity fallbacks", s.registry_dir)
        watcher.start()

    @app.agent(clicks, concurrency=1)
    async def score(stream: Any) -> None:
        """Events in, handed to the :class:`Batcher`; the agent itself never waits for a batch.

        ``noack_take`` leaves acking to us (a batch's input events are acked only after the
        broker confirmed every record it produced). faust moves events into a take buffer only
        while the agent is not inside its loop body, so the body just queues them: the take
        buffer keeps filling while a batch is scored, and the next batch is whatever arrived
        meanwhile, up to B (docs/BENCHMARKS.md).
        """
        batcher = Batcher(proc, stream.ack, s.batch_size, s.max_inflight, max_pending=4 * s.batch_size,
                          wait_s=s.batch_wait_ms / 1000.0)
        try:
            async for events in stream.noack_take(s.batch_size, within=s.batch_wait_ms / 1000.0):
                await batcher.put(events)
        finally:
            await batcher.close()
            await sender.stop()

    def _authorized(request: Request) -> bool:
        if s.api_token is None:
            return True
        got = request.headers.get("Authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {s.api_token.get_secret_value()}".encode())

    @app.page("/healthz")
    class Healthz(View):
        async def get(self, request: Request) -> Response:
            return self.json({"ok": True})

    @app.page("/readyz")
    class Readyz(View):
        async def get(self, request: Request) -> Response:
            assigned = len(app.consumer.assignment()) if app.consumer is not None else 0
            ready = proc.model is not None and assigned > 0
            body = {"ready": ready, "model_version": proc.model.version if proc.model else None, "assigned_partitions": assigned,
                    "model_error": watcher.last_error}  # fmt: skip
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if not _authorized(request):
                return self.json({"error": "unauthorized"}, status=401)
            if app.consumer is not None:
                assignment = app.consumer.assignment()
                metrics.assigned.set(len(assignment))
                proc.update_lag(assignment, app.consumer.highwater)
            return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    @app.page("/recs/{user_id}")
    class Recs(View):
        async def get(self, request: Request, user_id: str) -> Response:
            if not _authorized(request):
                return self.json({"error": "unauthorized"}, status=401)
            try:
                raw = await buffers.get_recs(user_id)
            except AttnrecError as exc:
                return self.json({"error": str(exc)}, status=503)
            if raw is None:
                return self.json({"error": f"no recommendation for user {user_id!r}"}, status=404)
            return self.bytes(raw, content_type="application/json")

    return app
