"""Backlog drain: produce N events at max rate to a fresh local stack, then watch one worker
(ATTNREC_* overrides as KEY=VALUE arguments) drain them via its /metrics. Serves the bench's
random 12k-item, L=50 model, built on first use under $ATTNREC_BENCH_WORK (docs/bench/_local.py).

    .venv/bin/python docs/bench/drain.py [ATTNREC_BATCH_WAIT_MS=25]
"""
import os, sys, time, urllib.request, re
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _local import start, stop as stop_stack  # noqa: E402
from attnrec.replay import produce  # noqa: E402
from stream.schema import ClickEvent  # noqa: E402
import random  # noqa: E402

st, s, w, port, items = start("e2e", sys.argv[1:])
try:
    rng = random.Random(1)
    N = int(os.environ.get("DRAIN_EVENTS", "20000"))
    evs = [ClickEvent(f"x{i}", f"u{rng.randrange(5000)}", rng.choice(items), "click", 1764300000000+i) for i in range(N)]
    t0 = time.time(); produce(s, evs, rate=None); tp = time.time()-t0
    print(f"produced {N} in {tp:.2f}s ({N/tp:.0f}/s)")
    def count():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r: txt = r.read().decode()
        m = re.search(r"^attnrec_events_total (\S+)", txt, re.M); return float(m.group(1)) if m else 0.0
    c0 = count(); t0 = time.time()
    while True:
        time.sleep(2); c = count(); print(f"t={time.time()-t0:.0f}s processed={c:.0f} rate={(c-c0)/(time.time()-t0):.0f}/s")
        if c >= N or time.time()-t0 > 60: break
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r: txt = r.read().decode()
    for name in ("attnrec_batch_size", "attnrec_redis_ms", "attnrec_model_ms", "attnrec_produce_ms"):
        s_ = float(re.search(rf"^{name}_sum (\S+)", txt, re.M).group(1)); n_ = float(re.search(rf"^{name}_count (\S+)", txt, re.M).group(1))
        print(name, "mean", round(s_/max(n_,1),2), "count", n_)
finally:
    stop_stack(st, w)
