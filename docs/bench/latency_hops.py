"""Where produce->recommendation latency goes, hop by hop, at 100 events/s: a fresh local
stack, one worker (ATTNREC_* overrides as KEY=VALUE arguments), 1,000 events from a
kafka-python producer (GL=<linger ms>, default 5, like the bench) and a kafka-python consumer
of `recs`. Splits each event's latency at the worker's `emitted_ts`. Serves the bench's random 12k-item,
L=50 model, built on first use under $ATTNREC_BENCH_WORK (docs/bench/_local.py).

    .venv/bin/python docs/bench/latency_hops.py [ATTNREC_BATCH_WAIT_MS=1]
"""
import os, sys, time, random, threading
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import start, stop as stop_stack  # noqa: E402
from attnrec.kafka_util import make_producer, make_consumer  # noqa: E402
import orjson  # noqa: E402

st, s, w, port, items = start("lat", sys.argv[1:])
try:
    sent = {}
    res = []
    stop = threading.Event()
    def consume():
        c = make_consumer(s, s.recs_topic, group_id=None, auto_offset_reset="latest", fetch_max_wait_ms=100, fetch_min_bytes=1)
        c.poll(timeout_ms=1000); c.seek_to_end()
        ready.set()
        while not stop.is_set():
            for tp, ms in c.poll(timeout_ms=50).items():
                now = time.time()
                for m in ms:
                    r = orjson.loads(m.value); e = r["trigger_event_id"]
                    if e in sent: res.append((sent[e], r["event_ts"] / 1000, r["emitted_ts"] / 1000, m.timestamp / 1000, now))
        c.close()
    ready = threading.Event(); t = threading.Thread(target=consume); t.start(); ready.wait(30); time.sleep(2)
    p = make_producer(s, linger_ms=int(os.environ.get("GL", "5")))
    rng = random.Random(3)
    for i in range(1000):
        eid = f"l{i}"; now = time.time()
        ev = {"event_id": eid, "user_id": f"u{rng.randrange(2000)}", "item_id": rng.choice(items), "event_type": "click", "ts": int(now * 1000)}
        sent[eid] = now
        p.send(s.clicks_topic, key=ev["user_id"].encode(), value=orjson.dumps(ev))
        time.sleep(max(0, 0.01 - (time.time() - now)))
    p.flush(); time.sleep(3); stop.set(); t.join()
    import numpy as np
    a = np.array(res)
    def q(x): return f"p50 {np.percentile(x,50)*1000:6.1f} p90 {np.percentile(x,90)*1000:6.1f} p99 {np.percentile(x,99)*1000:6.1f}"
    print("n", len(a))
    print("send -> worker emits rec  ", q(a[:,2]-a[:,0]))
    print("worker emits -> consumer  ", q(a[:,4]-a[:,2]))
    print("end to end                ", q(a[:,4]-a[:,0]))
finally:
    stop_stack(st, w)
