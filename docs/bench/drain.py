"""Backlog drain: produce N events at max rate to a fresh local stack, then watch one worker
(ATTNREC_* overrides as KEY=VALUE arguments) drain them via its /metrics. Needs a promoted
model in $ATTNREC_BENCH_WORK/reg (default /tmp/attnrec-bench-work) (docs/bench/stages_inprocess.py creates one: 12k items, L=50).

    .venv/bin/python docs/bench/drain.py [ATTNREC_BATCH_WAIT_MS=25]
"""
import os, sys, time, subprocess, json, urllib.request, re
from pathlib import Path

WORK = Path(os.environ.get("ATTNREC_BENCH_WORK", "/tmp/attnrec-bench-work"))
WORK.mkdir(parents=True, exist_ok=True)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repo root
from attnrec.stack import LocalStack, free_port
from attnrec.settings import Settings
from attnrec.kafka_util import ensure_topics
from attnrec.replay import produce
from stream.schema import ClickEvent
import random
root = WORK / "e2e"; root.mkdir(parents=True, exist_ok=True)
st = LocalStack(root/"stack", kafka_port=free_port(), controller_port=free_port(), redis_port=free_port())
st.up()
s = Settings(kafka_bootstrap=st.bootstrap, redis_url=st.redis_url, registry=WORK / "reg", home=root)
ensure_topics(s)
port = free_port()
env = dict(os.environ, ATTNREC_KAFKA_BOOTSTRAP=st.bootstrap, ATTNREC_REDIS_URL=st.redis_url, ATTNREC_REGISTRY=str(WORK / "reg"), ATTNREC_HOME=str(root), ATTNREC_WEB_PORT=str(port), **{k: v for k, v in (a.split("=",1) for a in sys.argv[1:])})
w = subprocess.Popen([sys.executable, "-m", "attnrec", "worker"], env=env, stdout=open(root/"w.log","ab"), stderr=subprocess.STDOUT, start_new_session=True)
try:
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r: break
        except Exception: time.sleep(0.5)
    reg_items = json.load(open(sorted((WORK / "reg").glob("*/items.json"))[0])) if list((WORK / "reg").glob("*/items.json")) else [f"item-{i}" for i in range(2,12000)]
    items = reg_items["items"] if isinstance(reg_items, dict) else reg_items
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
    os.killpg(w.pid, 15); w.wait(30); st.down()
