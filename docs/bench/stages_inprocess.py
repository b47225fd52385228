"""In-process per-stage cost of the worker hot path, no Kafka: parse, Redis Lua apply, build
inputs, ONNX, recommend, JSON, store recs, for B events per batch (argument; default 256),
against a private redis-server. Creates a random-weight 12k-item, L=50 model in $ATTNREC_BENCH_WORK/reg (default /tmp/attnrec-bench-work).

    .venv/bin/python docs/bench/stages_inprocess.py 256
"""
import asyncio, os, time, subprocess, sys, random
from pathlib import Path

WORK = Path(os.environ.get("ATTNREC_BENCH_WORK", "/tmp/attnrec-bench-work"))
WORK.mkdir(parents=True, exist_ok=True)
import numpy as np
import redis.asyncio as aioredis
from exporter.testing import write_random_checkpoint
from exporter.export import export_checkpoint
from stream.model import load_model
from stream.buffer import RedisBuffers
from stream.logic import RawRecord, parse_records, build_inputs, recommend
from stream.schema import ClickEvent
root = WORK
reg = root / "reg"
if not (reg / "CURRENT").exists():
    ck = write_random_checkpoint(root / "ck", n_items=12000, max_len=50, d_model=64, n_blocks=2)
    export_checkpoint(ck, reg, promote=True, force=True)
v = (reg / "CURRENT").read_text().strip()
m = load_model(reg / v, threads=1)
port = 56379
rp = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(WORK)], stdout=subprocess.DEVNULL)
time.sleep(0.5)
async def main():
    r = aioredis.Redis(port=port)
    buf = RedisBuffers(r, max_len=200)
    items = m.item_ids[2:]
    rng = random.Random(0)
    B = int(sys.argv[1]) if len(sys.argv) > 1 else 256
    tot = {"parse":0,"redis":0,"inputs":0,"model":0,"recs":0,"json":0,"store":0}
    n_users = 5000
    # warm buffers
    seq = 0
    for it in range(60):
        recs=[]
        for j in range(B):
            u = f"u{rng.randrange(n_users)}"
            ev = ClickEvent(f"e{seq}", u, rng.choice(items), "click", 1764300000000+seq)
            recs.append(RawRecord("clicks", 0, seq, u.encode(), ev.to_json())); seq+=1
        t0=time.perf_counter(); p = parse_records(recs); t1=time.perf_counter()
        res = await buf.apply(p.events, return_len=m.max_len+1); t2=time.perf_counter()
        inp = build_inputs(m, res.raw, res.users, exclude_window=50); t3=time.perf_counter()
        out = m.run(inp.items, inp.types, inp.gaps, inp.exclude); t4=time.perf_counter()
        trig = {ev.user_id: ev for ev,_,_ in p.events}
        rs = recommend(m, res.users, res.raw, trig, outputs=out, inputs=inp); t5=time.perf_counter()
        pay = {x.user_id: x.to_json() for x in rs}; t6=time.perf_counter()
        await buf.store_recs(pay); t7=time.perf_counter()
        if it >= 20:
            for k,a,b in (("parse",t0,t1),("redis",t1,t2),("inputs",t2,t3),("model",t3,t4),("recs",t4,t5),("json",t5,t6),("store",t6,t7)):
                tot[k]+=b-a
    n = 40*B
    print(f"B={B}", {k: f"{1e6*v/n:.1f}us" for k,v in tot.items()}, f"total {1e6*sum(tot.values())/n:.1f}us/event -> {n/sum(tot.values()):.0f} ev/s")
    await r.aclose()
try:
    asyncio.run(main())
finally:
    rp.terminate()
