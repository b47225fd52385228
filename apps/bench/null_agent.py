"""The floor of the framework: a faust agent that parses each click and produces one small
record per event, with no Redis and no model — everything else the worker's own.

It is built from the worker's parts (:func:`attnrec.stream.app.faust_app`, :func:`attnrec.stream.app.add_agent`
with the same :class:`~attnrec.stream.core.batcher.Batcher`, intake and
:class:`~attnrec.stream.core.output.Output`, the same settings), with a :class:`NullProcessor` in place of
the :class:`~attnrec.stream.core.processor.Processor`. So its latency and throughput, measured by the benchmark
in the same run at the same offered rate, are what the worker would do if Redis, the model and
the recommendation logic cost nothing; the ratio of the two is what attnrec adds.

    python -m attnrec.apps.bench.null_agent      # configured by ATTNREC_* like ``attnrec worker``
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import orjson

from attnrec.kafka_util import ensure_topics
from attnrec.settings import load_settings

from ...stream.app import add_agent, add_views, faust_app, make_output
from ...stream.core.metrics import WorkerMetrics
from ...stream.core.output import Outbox
from ...stream.core.processor import Processor
from ...stream.core.recommend import Recommendation
from ...stream.core.records import RawRecord, parse_records
from ...stream.core.stage import Batch
from ...stream.stages.timing import TIMING_HEADER, timing_header
from ..cli import setup_logging

__all__ = ["NullProcessor", "main"]

log = logging.getLogger(__name__)


class NullProcessor(Processor):
    """A batch is parsed, and each valid event gets one record on the recs topic
    (``user_id``, ``trigger_event_id``, ``event_ts``, ``emitted_ts``); dead letters as usual.
    No Redis, no model, no stages."""

    async def prepare(self, records: Sequence[RawRecord]) -> Batch:
        return Batch(records, parse_records(records))

    async def finish(self, batch: Batch) -> Outbox:
        s, m, parsed = self.s, self.metrics, batch.parsed
        now = time.time() * 1000
        marks = [now, now, now]  # no Redis, no model: their hops are zero
        recs = []
        for (ev, _, _), src in zip(parsed.events, parsed.sources, strict=True):
            payload = {"user_id": ev.user_id, "trigger_event_id": ev.event_id, "event_ts": ev.ts, "emitted_ts": int(now)}
            rec = Recommendation(ev.user_id, payload, src, data=orjson.dumps(payload))
            if s.timing_headers:
                rec.headers.append((TIMING_HEADER, timing_header(batch.records[src], marks, time.time() * 1000)))
            recs.append(rec)
        out = await self.output.publish(batch.records, parsed, recs)
        m.events.inc(len(parsed.events))
        m.recs.inc(len(parsed.events))
        for _, _, reason in parsed.dead:
            m.dead.labels(reason).inc()
        m.batch_size.observe(len(batch.records))
        self.batches += 1
        for r in batch.records:
            if r.offset + 1 > self.positions.get((r.topic, r.partition), -1):
                self.positions[(r.topic, r.partition)] = r.offset + 1
        return out


def main() -> None:
    """Run the null agent until SIGTERM/SIGINT, like ``attnrec worker``."""
    import faust

    # the framework's floor: plain produce and faust's own commits, whatever the worker's guarantee
    s = load_settings().model_copy(update={"processing_guarantee": "at_least_once"})
    setup_logging(s.log_level)
    ensure_topics(s)
    app = faust_app(s)
    metrics = WorkerMetrics()
    proc = NullProcessor(s, None, metrics, None, output=make_output(s, metrics))  # type: ignore[arg-type]
    add_agent(app, s, proc)
    add_views(app, s, proc)
    log.info("null agent starting: kafka=%s group=%s B=%d web=%s:%d", s.kafka_bootstrap, s.group_id, s.batch_size,
             s.web_host, s.web_port)
    faust.Worker(app, loglevel=s.log_level.lower(), quiet=True, redirect_stdouts=False).execute_from_commandline()


if __name__ == "__main__":
    main()
