"""Backlog drain: produce N events as fast as possible to a fresh local stack, then watch one
worker work through them on its ``/metrics``.

    .venv/bin/python docs/bench/drain.py [--events 20000] [ATTNREC_BATCH_WAIT_MS=25 ...]

Prints the producer's rate, the worker's progress every 2 s, and the mean batch size and
per-batch Redis/model/produce times from its histograms.
"""

from __future__ import annotations

import argparse
import random
import time

from _local import start

from attnrec.apps.bench.worker import scrape
from attnrec.apps.replay import produce
from attnrec.events import ClickEvent

T0_MS = 1_764_300_000_000
HISTOGRAMS = ("attnrec_batch_size", "attnrec_redis_ms", "attnrec_model_ms", "attnrec_produce_ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=20_000)
    p.add_argument("--timeout", type=float, default=60.0, help="stop watching after this many seconds")
    p.add_argument("overrides", nargs="*", help="ATTNREC_<SETTING>=value settings of the worker")
    a = p.parse_args()
    bench = start("drain", a.overrides)
    try:
        rng = random.Random(1)
        events = [ClickEvent(f"x{i}", f"u{rng.randrange(5000)}", rng.choice(bench.items), "click", T0_MS + i)
                  for i in range(a.events)]
        t0 = time.monotonic()
        produce(bench.s, events, rate=None)
        took = time.monotonic() - t0
        print(f"produced {a.events} events in {took:.2f} s ({a.events / took:,.0f}/s)")
        metrics = bench.worker.url("/metrics")
        start_count, t0 = scrape(metrics).get("attnrec_events_total", 0.0), time.monotonic()
        while True:
            time.sleep(2)
            done = scrape(metrics).get("attnrec_events_total", 0.0)
            elapsed = time.monotonic() - t0
            print(f"t={elapsed:3.0f}s processed={done:,.0f} rate={(done - start_count) / elapsed:,.0f}/s")
            if done >= a.events or elapsed > a.timeout:
                break
        m = scrape(metrics)
        for name in HISTOGRAMS:
            n = m.get(f"{name}_count", 0.0)
            print(f"{name}: mean {m.get(f'{name}_sum', 0.0) / max(n, 1):.2f} over {n:.0f} batches")
    finally:
        bench.close()


if __name__ == "__main__":
    main()
