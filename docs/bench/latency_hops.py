"""Where produce-to-recommendation latency goes, hop by hop, at a paced rate: a fresh local
stack, one worker, events from a kafka-python producer and a kafka-python consumer of
``recs``; each event's latency is split at the worker's ``emitted_ts``.

    .venv/bin/python docs/bench/latency_hops.py [--events 1000] [--rate 100] [--linger-ms 5] \
        [ATTNREC_BATCH_WAIT_MS=1 ...]
"""

from __future__ import annotations

import argparse
import random
import threading
import time

import numpy as np
import orjson
from _local import start

from attnrec.kafka_util import make_consumer, make_producer


def consume(bench, sent: dict[str, float], out: list[tuple[float, float, float]], ready: threading.Event,
            stop: threading.Event) -> None:
    """(sent, emitted, received) times of each recommendation whose trigger we sent."""
    c = make_consumer(bench.s, bench.s.recs_topic, group_id=None, auto_offset_reset="latest",
                      fetch_max_wait_ms=100, fetch_min_bytes=1)
    try:
        c.poll(timeout_ms=1000)
        c.seek_to_end()
        ready.set()
        while not stop.is_set():
            for msgs in c.poll(timeout_ms=50).values():
                now = time.time()
                for m in msgs:
                    rec = orjson.loads(m.value)
                    t_sent = sent.get(rec["trigger_event_id"])
                    if t_sent is not None:
                        out.append((t_sent, rec["emitted_ts"] / 1000, now))
    finally:
        c.close()


def percentiles(x: np.ndarray) -> str:
    return "  ".join(f"p{q} {np.percentile(x, q) * 1000:6.1f} ms" for q in (50, 90, 99))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--rate", type=float, default=100.0)
    p.add_argument("--linger-ms", type=int, default=5, help="the producer's linger (the bench uses 5)")
    p.add_argument("overrides", nargs="*", help="ATTNREC_<SETTING>=value settings of the worker")
    a = p.parse_args()
    bench = start("hops", a.overrides)
    sent: dict[str, float] = {}
    got: list[tuple[float, float, float]] = []
    ready, stop = threading.Event(), threading.Event()
    t = threading.Thread(target=consume, args=(bench, sent, got, ready, stop), daemon=True)
    try:
        t.start()
        ready.wait(30)
        producer = make_producer(bench.s, linger_ms=a.linger_ms)
        rng = random.Random(3)
        for i in range(a.events):
            now = time.time()
            user = f"u{rng.randrange(2000)}"
            ev = {"event_id": f"l{i}", "user_id": user, "item_id": rng.choice(bench.items), "event_type": "click",
                  "ts": int(now * 1000)}
            sent[ev["event_id"]] = now
            producer.send(bench.s.clicks_topic, key=user.encode(), value=orjson.dumps(ev))
            time.sleep(max(0.0, 1.0 / a.rate - (time.time() - now)))
        producer.flush()
        time.sleep(3)
    finally:
        stop.set()
        t.join(10)
        bench.close()
    arr = np.array(got)
    print(f"{len(arr)} recommendations of {a.events} events at {a.rate:g}/s")
    print("send -> worker emits   ", percentiles(arr[:, 1] - arr[:, 0]))
    print("worker emits -> consumer", percentiles(arr[:, 2] - arr[:, 1]))
    print("end to end             ", percentiles(arr[:, 2] - arr[:, 0]))


if __name__ == "__main__":
    main()
