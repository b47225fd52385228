"""The Faust worker's wiring: the app, its agents, its web views, its background tasks. Nothing else.

The core (:mod:`attnrec.stream.core`) and the configured stages (:func:`attnrec.stream.stages.build_stages`)
are built once from the settings (:func:`create_app`). The agent (concurrency 1) hands every
``clicks`` event to a :class:`~attnrec.stream.core.batcher.Batcher`, which runs batches through the
:class:`~attnrec.stream.core.processor.Processor` and their records through the
:class:`~attnrec.stream.core.output.Output`. At least once, a batch's input events are acked, and
so become committable, only once the broker has every record it produced; exactly once, they
commit with its records in its transactions.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from attnrec.errors import AttnrecError
from attnrec.kafka_util import faust_credentials
from attnrec.redis_util import redis_client
from attnrec.settings import Settings

from .core.batcher import Batcher, feed
from .core.buffer import STATE_LOST, RedisBuffers
from .core.groups import lost_writes_message
from .core.kip447 import GroupFencedError, GroupMetadata
from .core.metrics import WorkerMetrics
from .core.model import ModelWatcher, SessionFactory
from .core.output import KafkaSender, Output
from .core.processor import Processor
from .core.transactions import Transactions
from .intake import use_lean_consumer
from .stages import build_stages
from .stages.catalog import CatalogFeed

__all__ = ["faust_app", "make_output", "group_metadata", "add_agent", "add_catalog_feed", "add_views", "guard_redis_state", "create_app"]

log = logging.getLogger(__name__)


def faust_app(s: Settings) -> faust.App:
    """The faust app with the worker's framework configuration (consumer, commits, web); the
    benchmark's null agent is built on the same one. Its consumer hands each fetched message
    over with one call when nothing waits (:mod:`attnrec.stream.intake`)."""
    (s.home / "faust").mkdir(parents=True, exist_ok=True)  # faust creates only the last level
    app = faust.App(
        s.group_id,
        broker=[f"kafka://{h.strip()}" for h in s.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(s),
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
    use_lean_consumer(app)
    return app


def make_output(s: Settings, metrics: WorkerMetrics) -> Output:
    """The worker's output for its processing guarantee: its transactions (exactly once,
    :mod:`attnrec.stream.core.transactions`) or a plain producer (at least once)."""
    if s.processing_guarantee == "exactly_once":
        return Output(s, metrics, Transactions(s, metrics), transactional=True)
    return Output(s, metrics, KafkaSender(s))


def group_metadata(app: faust.App, s: Settings) -> GroupMetadata:
    """The worker's membership of its consumer group now, as the group coordinator knows it
    (generation, member id): what its transactions commit offsets as (KIP-447). Read from faust's
    aiokafka consumer, which runs in a thread of its own (two attributes read, never written)."""
    coordinator = app.consumer._thread._ensure_consumer()._coordinator  # noqa: SLF001 (faust keeps no public handle)
    generation, member = int(coordinator.generation), str(coordinator.member_id)
    if generation < 0 or not member:
        # The consumer left or is rejoining (a heartbeat found the member unknown: it was paused
        # past its session) and reset both. The coordinator skips its check for a transactional
        # commit without them, so this worker's batches of before the pause would commit over
        # the new owner's: nothing commits until the rebalance has reached this worker.
        raise GroupFencedError(f"no commit while the consumer rejoins its group (generation {generation}, member {member!r})")
    return GroupMetadata(s.group_id, generation, member, getattr(coordinator, "_group_instance_id", None))


def add_agent(app: faust.App, s: Settings, proc: Processor) -> None:
    """The one agent (concurrency 1) over ``clicks``: every event to a :class:`Batcher` over
    ``proc``. Exactly once, faust neither acks nor commits (the transactions commit the
    offsets), and the transactional sender follows the group's assignments."""
    txn = proc.output.txn
    clicks = app.topic(s.clicks_topic, partitions=s.partitions, key_type=bytes, value_type=bytes, acks=txn is None)
    if isinstance(txn, Transactions):
        txn.group = lambda: group_metadata(app, s)

        async def on_revoked(app: Any, revoked: Any, **_: Any) -> None:
            txn.revoked(tp.partition for tp in revoked if tp.topic == s.clicks_topic)

        async def on_assigned(app: Any, assigned: Any, **_: Any) -> None:
            txn.assigned(tp.partition for tp in assigned if tp.topic == s.clicks_topic)

        app.on_partitions_revoked.connect(on_revoked, weak=False)
        app.on_partitions_assigned.connect(on_assigned, weak=False)

    @app.agent(clicks, concurrency=1, name="score")
    async def score(stream: Any) -> None:
        """Events in, handed to the :class:`Batcher` one by one as they arrive; the agent itself
        never waits for a batch (acks are the batcher's, once a batch's output is delivered)."""
        batcher = Batcher(proc, _no_ack if txn is not None else stream.ack, s.batch_size, s.max_inflight,
                          max_pending=4 * s.batch_size, wait_s=s.batch_wait_ms / 1000.0,
                          on_idle=proc.maybe_swap, idle_s=s.reload_poll_s)
        try:
            await feed(stream, batcher)
        finally:
            await batcher.close()
            await proc.output.stop()


def add_catalog_feed(app: faust.App, s: Settings, proc: Processor) -> CatalogFeed:
    """With ``CATALOG``: the catalog topic applied to the availability state shared in Redis by
    a thread of its own (:class:`attnrec.stream.stages.catalog.CatalogFeed`), started with the
    app and stopped with it; the worker is ready once it has joined its group."""
    feed = CatalogFeed(s, proc.metrics)

    @app.task
    async def _catalog_feed() -> None:
        feed.start()
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, feed.stop)

    return feed


async def _no_ack(event: Any) -> None:
    """Exactly-once: events are not acked to faust (its commits could overtake a transaction's)."""


def add_views(app: faust.App, s: Settings, proc: Processor, *, buffers: RedisBuffers | None = None,
              watcher: ModelWatcher | None = None, catalog: CatalogFeed | None = None) -> None:
    """``/healthz``, ``/readyz`` (a model loaded, unless there is no ``watcher``, partitions
    assigned, and the ``catalog`` feed in its group), ``/metrics`` and, with ``buffers``,
    ``/recs/<user>``."""
    metrics = proc.metrics
    lag = _Lag(s, metrics)

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
            feed = catalog is None or catalog.joined.is_set()
            ready = (watcher is None or proc.model is not None) and assigned > 0 and proc.state_error is None and feed
            body = {"ready": ready, "model_version": proc.model.version if proc.model else None, "assigned_partitions": assigned,
                    "model_error": watcher.last_error if watcher is not None else None,
                    "state_error": proc.state_error, "catalog_feed": None if catalog is None else feed}  # fmt: skip
            return self.json(body, status=200 if ready else 503)

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            if not _authorized(request):
                return self.json({"error": "unauthorized"}, status=401)
            if app.consumer is not None:
                assignment = app.consumer.assignment()
                metrics.assigned.set(len(assignment))
                lag.update(proc.positions, assignment, app.consumer.highwater)
            return self.bytes(metrics.render(), content_type="text/plain; version=0.0.4")

    if buffers is None:
        return

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


class _Lag:
    """``attnrec_consumer_lag{partition}`` = highwater - next offset to process, for each assigned
    input partition this worker has processed since it started; the others' series dropped."""

    def __init__(self, s: Settings, metrics: WorkerMetrics) -> None:
        self.s, self.metrics = s, metrics
        self._labels: set[str] = set()

    def update(self, positions: dict[tuple[str, int], int], assignment: Any, highwater: Any) -> None:
        live: set[str] = set()
        for tp in assignment:
            pos = positions.get((tp.topic, tp.partition))
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
        for label in self._labels - live:
            self.metrics.lag.remove(label)
        self._labels = live


async def guard_redis_state(s: Settings, buffers: RedisBuffers, proc: Processor, poll_s: float = 5.0) -> None:
    """Keep Redis' state honest (:mod:`attnrec.stream.core.groups`). The state marker (one Redis:
    ``attnrec:state``; a Redis Cluster: one per slot, a spread of them checked) missing at a
    fresh start (the group has committed nothing) is created, and so it is when Redis holds
    users' buffers but no marker at all (written by a version from before the marker); missing
    while the group has committed offsets (the buffers were lost: all of them, or a cluster
    master's) the worker reports it and stays paused until the data is restored, unless
    ``ATTNREC_REDIS_EMPTY_OK`` (then it starts over). A batch refused because Redis lost writes
    it had acknowledged (:class:`~attnrec.errors.LostWritesError`) is reported with every group
    affected and the offsets to replay from; the worker stays paused (restarting it accepts the
    loss). Checked every ``poll_s`` seconds, and at once when a batch was refused."""
    from attnrec.kafka_util import committed_offsets

    loop = asyncio.get_running_loop()
    reported = ""
    while True:
        lost_msg = state_msg = ""
        try:
            if buffers.lost and (lost := await buffers.audit()):
                lost_msg = lost_writes_message(lost)
            present, checked = await buffers.state_markers() if not lost_msg else (1, 1)
            if present < checked:
                done = await loop.run_in_executor(None, committed_offsets, s, s.group_id, s.clicks_topic)
                why = None
                if not any(done.values()):
                    why = "a fresh start"
                elif s.redis_empty_ok:
                    why = "ATTNREC_REDIS_EMPTY_OK"
                elif present == 0 and await buffers.has_buffers():  # written by a version from before the marker
                    why = "buffers from before the state marker (an upgrade)"
                if why is not None:
                    await buffers.mark_state(why)
                    log.info("Redis had no attnrec state: marked it (%s)", why)
                    continue
                state_msg = STATE_LOST if present == 0 else (
                    f"{STATE_LOST} ({checked - present} of the {checked} Redis Cluster slots checked have no state "
                    "marker: a master failed over to a replica without its data?)")
            proc.metrics.lost_writes.set(1 if lost_msg else 0)
            proc.metrics.state_lost.set(1 if state_msg else 0)
            error = lost_msg or state_msg
            if error and error != reported:
                log.error("%s", error)
            elif reported and not error:
                log.warning("Redis holds attnrec's state again: batches resume")
            proc.state_error, reported = error or None, error
        except AttnrecError as exc:
            log.warning("cannot check Redis' state: %s", exc)
        except Exception as exc:  # kafka admin trouble: look again later
            log.warning("cannot read the group's committed offsets: %s: %s", type(exc).__name__, exc)
        buffers.trouble.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(buffers.trouble.wait(), poll_s)


def create_app(settings: Settings, *, session_factory: SessionFactory | None = None) -> faust.App:
    """Build the worker from one settings object: the faust app, the core and the configured
    stages, the agents, the web views and the background tasks. ``session_factory`` replaces the
    onnxruntime session of every loaded model (the ``ATTNREC_SCORER=torch`` baseline; the apps
    layer provides it)."""
    s = settings
    app = faust_app(s)
    metrics = WorkerMetrics()
    watcher = ModelWatcher(
        s.registry_dir,
        threads=s.ort_threads,
        poll_s=s.reload_poll_s,
        on_event=lambda kind, version, why: metrics.reloads.labels(kind).inc(),
        session_factory=session_factory,
    )
    buffers = RedisBuffers(
        redis_client(s), max_len=s.buffer_len, ttl_s=s.buffer_ttl_s, dedupe_window=s.dedupe_window,
        wait_replicas=s.redis_wait_replicas, wait_timeout_ms=s.redis_wait_timeout_ms,
    )
    stages = build_stages(s, buffers.r, metrics, watcher)
    proc = Processor(s, buffers, metrics, watcher, stages, make_output(s, metrics))
    app.attnrec = proc  # type: ignore[attr-defined]
    app.attnrec_metrics = metrics  # type: ignore[attr-defined]
    log.info("stages on the batch path: %s", ", ".join(stages.names) or "none")

    @app.task
    async def _load_model() -> None:
        # load off the event loop's hot path; then poll CURRENT in a thread
        m = await asyncio.get_running_loop().run_in_executor(None, watcher.load_now)
        if m is not None and proc.model is None:
            proc.set_model(m)
        elif m is None:
            log.warning("no model promoted in %s yet: serving popularity fallbacks", s.registry_dir)
        watcher.start()

    for task in stages.tasks():
        app.task(task)

    @app.task
    async def _redis_state() -> None:
        await guard_redis_state(s, buffers, proc)

    add_agent(app, s, proc)
    feed = add_catalog_feed(app, s, proc) if s.catalog else None
    add_views(app, s, proc, buffers=buffers, watcher=watcher, catalog=feed)
    return app
