"""The second floor: no faust at all. A plain aiokafka ``getmany`` -> produce loop that parses each
click with the worker's parser and produces one small record per event, committing the input
offsets once the broker has acknowledged what a batch produced (at least once).

Beside the faust null agent (:mod:`attnrec.apps.bench.null_agent`, the framework with nothing
of ours), it tells what the framework itself costs: the null agent minus this loop is faust's
share of the worker's latency and CPU. Measured by the benchmark in the same run at the same
rate (``--baseline-set ...,plain``).

    python -m attnrec.apps.bench.plain_agent      # configured by ATTNREC_* like ``attnrec worker``
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

import orjson
from aiohttp import web

from attnrec.kafka_util import aiokafka_security, ensure_topics
from attnrec.settings import Settings, load_settings

from ...stream.core.metrics import WorkerMetrics
from ...stream.core.records import RawRecord, parse_records
from ...stream.stages.timing import TIMING_HEADER, timing_header
from ..cli import setup_logging

__all__ = ["main", "run"]

log = logging.getLogger(__name__)


async def run(s: Settings, stop: asyncio.Event) -> None:
    """Consume, parse, produce and commit until ``stop`` is set."""
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    metrics = WorkerMetrics()
    app = web.Application()

    async def ready(_: web.Request) -> web.Response:
        return web.json_response({"ready": bool(consumer.assignment())}, status=200 if consumer.assignment() else 503)

    async def scrape(_: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), content_type="text/plain")

    app.router.add_get("/readyz", ready)
    app.router.add_get("/healthz", lambda _: web.json_response({"ok": True}))
    app.router.add_get("/metrics", scrape)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, s.web_host, s.web_port).start()
    consumer = AIOKafkaConsumer(s.clicks_topic, bootstrap_servers=s.kafka_bootstrap, group_id=s.group_id,
                                enable_auto_commit=False, auto_offset_reset="earliest",
                                session_timeout_ms=int(s.kafka_session_timeout_s * 1000),
                                heartbeat_interval_ms=int(s.kafka_heartbeat_s * 1000), **aiokafka_security(s))
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all", linger_ms=int(s.producer_linger_ms),
                                **aiokafka_security(s))
    await consumer.start()
    await producer.start()
    try:
        while not stop.is_set():
            got = await consumer.getmany(timeout_ms=100, max_records=s.batch_size)
            if not got:
                continue
            received = time.time() * 1000
            records = [RawRecord(tp.topic, tp.partition, m.offset, m.key, m.value, m.timestamp, received)
                       for tp, msgs in got.items() for m in msgs]
            parsed = parse_records(records)
            now = time.time() * 1000
            marks = [now, now, now]
            futures = []
            for (ev, _, _), src in zip(parsed.events, parsed.sources, strict=True):
                value = orjson.dumps({"user_id": ev.user_id, "trigger_event_id": ev.event_id, "event_ts": ev.ts,
                                      "emitted_ts": int(now)})
                headers = [(TIMING_HEADER, timing_header(records[src], marks, time.time() * 1000))] \
                    if s.timing_headers else None
                futures.append(await producer.send(s.recs_topic, value=value, key=ev.user_id.encode(), headers=headers))
            await asyncio.gather(*futures)
            await consumer.commit({TopicPartition(tp.topic, tp.partition): msgs[-1].offset + 1 for tp, msgs in got.items()})
            metrics.events.inc(len(parsed.events))
            metrics.batch_size.observe(len(records))
    finally:
        await consumer.stop()
        await producer.stop()
        await runner.cleanup()


def main() -> None:
    """Run the plain loop until SIGTERM/SIGINT."""
    s = load_settings().model_copy(update={"processing_guarantee": "at_least_once"})
    setup_logging(s.log_level)
    ensure_topics(s)
    log.info("plain agent starting: kafka=%s group=%s B=%d web=%s:%d", s.kafka_bootstrap, s.group_id, s.batch_size,
             s.web_host, s.web_port)

    async def go() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await run(s, stop)

    asyncio.run(go())


if __name__ == "__main__":
    main()
