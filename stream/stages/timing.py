"""``TIMING_HEADERS``: each recommendation carries its trigger's milestones, so the benchmark can
split latency hop by hop: :class:`TimingStage`.

The header ``attnrec-timing`` holds epoch milliseconds, comma-separated: the clicks record's
broker timestamp (its append time on a LogAppendTime topic), received by the worker, batch
start, Redis done, model done, handed to the producer.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from ..core.records import RawRecord
from ..core.stage import Batch, Stage

__all__ = ["TIMING_HEADER", "timing_header", "TimingStage"]

TIMING_HEADER = "attnrec-timing"
#: The core's steps whose end is a milestone: batch start (parsed), Redis done, model done.
_MARKS = {"parse": 0, "redis": 1, "model": 2}


def timing_header(record: RawRecord, batch_ms: Sequence[float], sent_ms: float) -> bytes:
    """The header of a recommendation triggered by ``record``: broker append, received, then
    the batch's milestones (start, Redis done, model done) and ``sent_ms``."""
    return (f"{record.timestamp_ms},{record.received_ms:.3f},{batch_ms[0]:.3f},{batch_ms[1]:.3f},{batch_ms[2]:.3f},"
            f"{sent_ms:.3f}").encode()


class TimingStage(Stage):
    name = "timing"

    def step(self, batch: Batch, name: str) -> None:
        i = _MARKS.get(name)
        if i is not None:  # "model" comes twice (run started, scores in hand): the last one stays
            marks = batch.extra.setdefault(self.name, [0.0, 0.0, 0.0])
            marks[i] = time.time() * 1000

    async def rewrite(self, batch: Batch) -> None:
        marks, now = batch.extra.get(self.name, [0.0, 0.0, 0.0]), time.time() * 1000
        for r in batch.recs:
            r.headers.append((TIMING_HEADER, timing_header(batch.records[r.source], marks, now)))
