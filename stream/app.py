"""The Faust worker's wiring: the app, its one agent and its web views. Nothing else.

The agent (concurrency 1) consumes ``clicks`` with ``noack_take(B, within=W)`` into a
:class:`stream.batcher.Batcher`, which runs batches through a
:class:`stream.processor.Processor` (parse, Redis, model, recommendations; the decisions are
:mod:`stream.logic`'s) and hands their records to a :class:`stream.sender.KafkaSender`. A
batch's input events are acked, and so become committable, only once the broker has
acknowledged every record it produced.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from typing import Any

import faust
from faust.web import Request, Response, View

from attnrec.errors import AttnrecError
from attnrec.kafka_util import faust_credentials
from attnrec.redis_util import redis_client
from attnrec.settings import Settings
from stream.batcher import Batcher
from stream.buffer import RedisBuffers
from stream.metrics import WorkerMetrics
from stream.model import ModelWatcher, SessionFactory
from stream.processor import Processor
from stream.sender import KafkaSender

__all__ = ["create_app"]

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, session_factory: SessionFactory | None = None) -> faust.App:
    """Build the faust app, its agent and its web views from one settings object.
    ``session_factory`` replaces the onnxruntime session of every loaded model (the
    ``ATTNREC_SCORER=torch`` baseline; the apps layer provides it)."""
    s = settings
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
    metrics = WorkerMetrics()
    watcher = ModelWatcher(
        s.registry_dir,
        threads=s.ort_threads,
        poll_s=s.reload_poll_s,
        on_event=lambda kind, version, why: metrics.reloads.labels(kind).inc(),
        session_factory=session_factory,
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

