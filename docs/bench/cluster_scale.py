"""Scale on real distributed engines: throughput and latency with 1, 2 and 3 worker processes on a
3-broker Kafka (replication 3, min.insync.replicas 2, transactions) and a Redis Cluster (3
masters + 3 replicas), the CPU each component spends per event, and Redis memory per user on
the cluster. docs/BENCHMARKS.md ("On a 3-broker Kafka and a Redis Cluster") has the figures;
docs/DEPLOY.md's sizing table is derived from these unit costs.

    .venv/bin/python docs/bench/cluster_scale.py --json docs/bench/cluster_scale.json [--workers 1,2,3]
        [--repeats 3] [--duration 10] [--rate 1000] [--users 2000] [--memory-users 300] [--memory-events 300]

Everything runs on this one box: the three brokers (full JIT, 512 MB heaps), the six Redis
nodes, the workers, and the benchmark's load generator and recommendations reader (librdkafka),
on a fresh stack under ``$ATTNREC_HOME/bench-scripts/cluster-scale``. The model is the
benchmark's cached random-weight one (12,000 items, L=50, d=64, 2 blocks, incremental); users'
buffers are pre-filled (200 entries) and their key/value caches warmed before measuring. Per
worker count: ``--repeats`` closed-loop runs at rate max (throughput) and paced runs at
``--rate`` (latency), medians with min–max. CPU per event = CPU seconds of each process over a
run / the events it served. Run it on a quiet box: every figure is only as good as that.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from attnrec.apps.bench.host import cpu_seconds, loadavg  # noqa: E402
from attnrec.apps.bench.models import ensure_model  # noqa: E402
from attnrec.apps.bench.report import machine_info  # noqa: E402
from attnrec.apps.bench.run import RunConfig, run_once  # noqa: E402
from attnrec.apps.bench.settings import BenchSettings  # noqa: E402
from attnrec.apps.bench.worker import WorkerHandle, open_session  # noqa: E402
from attnrec.apps.stack import LocalStack, free_port  # noqa: E402

from attnrec.settings import load_settings  # noqa: E402

log = logging.getLogger("cluster_scale")
CATALOG, MAX_LEN, PARTITIONS = 12_000, 50, 12


def start_stack(root: Path, libs: Path) -> LocalStack:
    shutil.rmtree(root / "stack", ignore_errors=True)  # fresh: a Redis node's nodes.conf keeps the old ports
    st = LocalStack(root / "stack", kafka_port=free_port(), controller_port=free_port(), redis_port=free_port(),
                    brokers=3, kafka_ports=tuple(free_port() for _ in range(3)),
                    controller_ports=tuple(free_port() for _ in range(3)), redis_cluster=True,
                    redis_cluster_ports=tuple(free_port() for _ in range(6)),
                    redis_cluster_bus_ports=tuple(free_port() for _ in range(6)), kafka_heap="512m",
                    kafka_libs=libs)  # fmt: skip
    st.up()
    return st


def processes(st: LocalStack) -> dict[str, Any]:
    """psutil handles of the brokers and the Redis nodes (role by the cluster's view now)."""
    import psutil

    roles = {r.port: ("master" if r.master else "replica") for r in st.cluster_nodes()}
    out: dict[str, Any] = {}
    for n in st.kafka_nodes:
        out[f"kafka/{n.name}"] = psutil.Process(st._read_pid(n.name))  # noqa: SLF001
    for n in st.redis_nodes:
        out[f"redis-{roles.get(n.port, 'node')}/{n.name}"] = psutil.Process(st._read_pid(n.name))  # noqa: SLF001
    return out


def cpu_by_part(procs: dict[str, Any], workers: list[WorkerHandle]) -> dict[str, float]:
    import psutil

    out = {k: cpu_seconds(p) for k, p in procs.items()}
    for w in workers:
        out[f"worker/{w.name}"] = cpu_seconds(psutil.Process(w.pid))
    out["harness"] = cpu_seconds(psutil.Process(), children=False)
    return out


def grouped(cpu: dict[str, float], events: int) -> dict[str, float]:
    """µs of CPU per event by component (workers, brokers, Redis masters, replicas, harness)."""
    parts: dict[str, float] = {}
    for k, v in cpu.items():
        parts[k.split("/")[0]] = parts.get(k.split("/")[0], 0.0) + v
    return {k: round(1e6 * v / max(1, events), 1) for k, v in parts.items()}


def wait_split(workers: list[WorkerHandle], timeout: float = 120.0) -> list[int]:
    deadline = time.monotonic() + timeout
    got: list[int] = []
    while time.monotonic() < deadline:
        got = []
        for w in workers:
            try:
                got.append(int(json.loads(w.get("/readyz")[1])["assigned_partitions"]))
            except (OSError, ValueError, KeyError):
                got.append(-1)
        if sum(got) == PARTITIONS and all(n > 0 for n in got):
            return got
        time.sleep(0.5)
    raise RuntimeError(f"partitions not split over {len(workers)} workers: {got}")


def one_count(base: BenchSettings, st: LocalStack, n_workers: int, args: argparse.Namespace, registry: Path,
              items: list[str], root: Path) -> dict[str, Any]:  # fmt: skip
    tag = uuid.uuid4().hex[:6]
    s = base.model_copy(update={
        "clicks_topic": f"scale-{tag}-clicks", "recs_topic": f"scale-{tag}-recs", "dlq_topic": f"scale-{tag}-clicks.dlq",
        "updates_topic": f"scale-{tag}-model-updates", "group_id": f"attnrec-scale-{tag}", "registry": registry,
        "timing_headers": True, "partitions": PARTITIONS, "replication_factor": 3, "min_insync_replicas": 2,
    })  # fmt: skip
    sess = open_session(s, registry=registry, items=items, n_users=args.users, log_dir=root, catalog_items=CATALOG,
                        max_len=MAX_LEN, start_worker=False)  # fmt: skip
    workers = [WorkerHandle(s, root, name=f"w{n_workers}-{i}") for i in range(n_workers)]
    try:
        for w in workers:
            w.wait_ready()
        split = wait_split(workers)
        procs = processes(st)
        run_once(s, RunConfig(rate=1000, duration_s=args.users / 1000 + 2, warmup_s=0, users=args.users, label="warm"),
                 items=items, users=sess.users, progress=False)  # every user's cache filled
        out: dict[str, Any] = {"workers": n_workers, "split": split, "runs": {}}
        for mode, rate in (("max", None), ("paced", float(args.rate))):
            if mode not in args.modes.split(","):
                continue
            runs = []
            for r in range(args.repeats):
                c0 = cpu_by_part(procs, workers)
                res = run_once(s, RunConfig(rate=rate, duration_s=args.duration, warmup_s=2.0, users=args.users,
                                            seed=11 + r, label=f"{n_workers}w {mode} {r + 1}"),
                               items=items, users=sess.users, progress=False)  # fmt: skip
                c1 = cpu_by_part(procs, workers)
                cpu = {k: c1[k] - c0.get(k, 0.0) for k in c1}
                runs.append({"events_per_s": res["events_per_s"], "latency_ms": res["latency_ms"],
                             "produced": res["produced"], "lost": res["lost"], "duplicates": res["duplicates"],
                             "saturated": res["saturated"], "cpu_us_per_event": grouped(cpu, res["produced"]),
                             "cpu_us_per_event_by_process": {k: round(1e6 * v / max(1, res["produced"]), 1)
                                                             for k, v in cpu.items()},
                             "cpu_s": {k: round(v, 2) for k, v in cpu.items()}, "load_avg": loadavg()})  # fmt: skip
                log.info("%d worker(s) %s run %d: %.0f events/s, p50 %s p99 %s ms, cpu/ev %s", n_workers, mode, r + 1,
                         res["events_per_s"], res["latency_ms"]["p50"], res["latency_ms"]["p99"],
                         runs[-1]["cpu_us_per_event"])  # fmt: skip
            out["runs"][mode] = runs
            out[mode] = summary(runs)
        return out
    finally:
        for w in workers:
            w.terminate(timeout=60)
        sess.close()


def _mmm(xs: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(xs), 1), "min": round(min(xs), 1), "max": round(max(xs), 1)}


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    parts = sorted({k for r in runs for k in r["cpu_us_per_event"]})
    procs = sorted({k for r in runs for k in r["cpu_us_per_event_by_process"]})
    return {"events_per_s": _mmm([r["events_per_s"] for r in runs]),
            "p50_ms": _mmm([r["latency_ms"]["p50"] for r in runs]), "p99_ms": _mmm([r["latency_ms"]["p99"] for r in runs]),
            "cpu_us_per_event": {k: round(statistics.median(r["cpu_us_per_event"].get(k, 0.0) for r in runs), 1)
                                 for k in parts},
            "cpu_us_per_event_by_process": {k: round(statistics.median(r["cpu_us_per_event_by_process"].get(k, 0.0)
                                                                       for r in runs), 1) for k in procs},
            "load_avg": [r["load_avg"] for r in runs],
            "lost": sum(r["lost"] for r in runs), "duplicates": sum(r["duplicates"] for r in runs)}  # fmt: skip


def memory_per_user(base: BenchSettings, st: LocalStack, n_users: int, events_per_user: int = 300) -> dict[str, Any]:
    """Redis memory per user on the cluster at steady state (``events_per_user`` > the buffer's
    200 and the dedupe window's 64: both full; a stored recommendation), written exactly as the worker writes it: ``used_memory`` growth of
    the masters and of the replicas over ``n_users`` users, and ``MEMORY USAGE`` of their keys."""
    import asyncio

    import redis
    from attnrec.apps.bench.load import redis_bytes_per_user, write_as_worker
    from attnrec.stream.core.buffer import RedisBuffers

    from attnrec.redis_util import redis_client

    def used() -> dict[str, int]:
        roles = {r.port: r.master for r in st.cluster_nodes()}
        return {("master" if roles[n.port] else "replica"): 0 for n in st.redis_nodes} | {
            k: sum(int(redis.Redis(port=n.port).info("memory")["used_memory"]) for n in st.redis_nodes
                   if roles[n.port] == (k == "master")) for k in ("master", "replica")}  # fmt: skip

    tag = uuid.uuid4().hex[:6]
    users = [f"mem-{tag}-{i:06d}" for i in range(n_users)]

    async def fill() -> None:
        b = RedisBuffers(redis_client(base, timeout_s=60), max_len=base.buffer_len, ttl_s=base.buffer_ttl_s,
                         dedupe_window=base.dedupe_window)  # fmt: skip
        await b.mark_state("cluster scale: memory")
        await write_as_worker(b, users, events_per_user, f"mem-{tag}", 10**12)
        await b.r.aclose()

    time.sleep(2)
    before = used()
    t0 = time.monotonic()
    asyncio.run(fill())
    fill_s = time.monotonic() - t0
    time.sleep(3)  # the replicas catch up
    after = used()
    usage = redis_bytes_per_user(base, users) or 0.0
    return {"users": n_users, "events_per_user": events_per_user, "buffer_len": base.buffer_len,
            "dedupe_window": base.dedupe_window, "fill_s": round(fill_s, 1),
            "us_per_event_written": round(1e6 * fill_s / (n_users * events_per_user), 1),
            "masters_used_memory_kib_per_user": round((after["master"] - before["master"]) / n_users / 1024, 2),
            "replicas_used_memory_kib_per_user": round((after["replica"] - before["replica"]) / n_users / 1024, 2),
            "memory_usage_kib_per_user": round(usage / 1024, 2)}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--workers", default="1,2,3")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--users", type=int, default=2000)
    ap.add_argument("--modes", default="max,paced", help="max (closed loop), paced (at --rate), or both")
    ap.add_argument("--memory-users", type=int, default=300, help="0: no memory measurement")
    ap.add_argument("--memory-events", type=int, default=300, help="events per user of the memory measurement")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("kafka", "aiokafka", "faust"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    base = load_settings(BenchSettings)
    root = (base.home / "bench-scripts" / "cluster-scale").resolve()
    registry, items = ensure_model(base.bench_cache_dir, CATALOG, MAX_LEN)
    st = start_stack(root, base.kafka_libs)
    started = time.time()
    try:
        base = base.model_copy(update={"kafka_bootstrap": st.bootstrap, "redis_url": st.redis_url, "home": root})
        report: dict[str, Any] = {"machine": machine_info(), "load_avg_before": loadavg(),
                                  "command": " ".join(["docs/bench/cluster_scale.py", *sys.argv[1:]]),
                                  "model": {"catalog_items": CATALOG, "max_len": MAX_LEN, "d_model": 64, "blocks": 2},
                                  "partitions": PARTITIONS, "users": args.users, "by_workers": []}  # fmt: skip
        for n in (int(x) for x in args.workers.split(",")):
            report["by_workers"].append(one_count(base, st, n, args, registry, items, root))
            args.json.write_text(json.dumps(report, indent=1))
        if args.memory_users:
            report["memory"] = memory_per_user(base, st, args.memory_users, args.memory_events)
        report["load_avg_after"] = loadavg()
        report["minutes"] = round((time.time() - started) / 60, 1)
        args.json.write_text(json.dumps(report, indent=1))
        for row in report["by_workers"]:
            for mode in ("max", "paced"):
                if mode in row:
                    m = row[mode]
                    print(f"{row['workers']} worker(s) {row['split']} {mode}: {m['events_per_s']} events/s, p50 "
                          f"{m['p50_ms']} p99 {m['p99_ms']} ms, CPU µs/event {m['cpu_us_per_event']}")
        print("memory:", report.get("memory"))
    finally:
        st.down()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
