"""The soak (``make soak``; not in ``make test``): a long steady stream through exactly-once
workers with a fault every few minutes, then the same accounting as the fault tests (each
acknowledged event once in Redis, each recommendation once, read committed), and memory over
time: each worker's RSS and Redis' ``used_memory``, sampled and plotted.

    .venv/bin/python -m pytest -p no:cacheprovider -s tests/integration/test_soak.py --soak \
        [--soak-events 1000000] [--soak-rate 540] [--soak-fault-every 300] [--soak-plot docs/img/soak-memory.png]

Faults in turn: SIGKILL of a worker (a successor starts), a Redis restart, a broker SIGKILL and
restart, a rebalance (a second worker joins, then leaves with SIGTERM). Memory must level off:
the buffers are capped at ``buffer_len`` entries and the event-id window at
``dedupe_window`` per user, the key/value cache at ``ATTNREC_CACHE_MB``.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from attnrec.redis_util import redis_sync
from tests.faultkit import (
    Scenario,
    assert_exact,
    check_recs,
    check_state,
    finish,
    wait_applied,
    wait_progress,
)
from tests.helpers import WorkerProc

pytestmark = [pytest.mark.integration, pytest.mark.soak, pytest.mark.usefixtures("fast_group_eviction")]

N_USERS = 1000  # 1,000 events per user over 10^6: the buffers (200 entries) are full after 20 % of the run
BUFFER_LEN = 200


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Sampler:
    """Every ``every`` seconds: elapsed s, events sent, each live worker's RSS (MB), Redis used_memory (MB)."""

    def __init__(self, sc: Scenario, feeder: Any, workers: Callable[[], list[WorkerProc]], every: float = 10.0) -> None:
        self.sc, self.feeder, self.workers, self.every = sc, feeder, workers, every
        self.rows: list[dict[str, Any]] = []
        self.t0 = time.time()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def _run(self) -> None:
        r = None
        while not self._stop.wait(self.every):
            row: dict[str, Any] = {"t": round(time.time() - self.t0, 1), "sent": self.feeder.seq,
                                   "rss_mb": {w.name: rss_mb(w.proc.pid) for w in self.workers() if w.proc.poll() is None}}
            try:
                r = r or redis_sync(self.sc.s)
                row["redis_mb"] = r.info("memory")["used_memory"] / 2**20
            except Exception:  # Redis restarting: no sample
                r = None
                row["redis_mb"] = None
            self.rows.append(row)

    def start(self) -> Sampler:
        self.thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(30)


def plot(rows: list[dict[str, Any]], faults: list[tuple[float, str]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    names = sorted({n for r in rows for n in r["rss_mb"]})
    for n in names:
        pts = [(r["t"] / 60, r["rss_mb"][n]) for r in rows if r["rss_mb"].get(n) is not None]
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker=".", label=f"worker {n}")
    ax1.set_ylabel("worker RSS (MB)")
    ax1.legend(fontsize=7, loc="lower right")
    pts = [(r["t"] / 60, r["redis_mb"]) for r in rows if r["redis_mb"] is not None]
    ax2.plot([p[0] for p in pts], [p[1] for p in pts], color="tab:red", label="Redis used_memory")
    ax2.set_ylabel("Redis used_memory (MB)")
    ax2.set_xlabel("minutes")
    for ax in (ax1, ax2):
        for t, what in faults:
            ax.axvline(t / 60, color="grey", lw=0.6, ls="--")
            if ax is ax1:
                ax.text(t / 60, ax.get_ylim()[1], what, rotation=90, fontsize=6, va="top", ha="right")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


@pytest.mark.timeout(0)  # as long as the soak asked for (pytest-timeout's default would cut it at 10 min)
def test_soak(stack: Any, scenario: Callable[..., Scenario], pytestconfig: pytest.Config,
              report: dict[str, Any]) -> None:  # fmt: skip
    n = int(pytestconfig.getoption("--soak-events"))
    rate = float(pytestconfig.getoption("--soak-rate"))
    every = float(pytestconfig.getoption("--soak-fault-every"))
    out = Path(pytestconfig.getoption("--soak-plot"))
    sc = scenario(buffer_len=BUFFER_LEN, partitions=8)
    live: list[WorkerProc] = [sc.worker("w0")]
    f = sc.feeder(n_users=N_USERS)
    live[0].wait_ready()
    sampler = Sampler(sc, f, lambda: list(live)).start()
    faults: list[tuple[float, str]] = []
    f.start(n=n, rate=rate)
    wait_progress(sc.r, f, min(n, 2000))
    kinds = ["worker SIGKILL", "Redis restart", "broker SIGKILL", "rebalance"]
    k = 0
    next_fault = time.time() + every
    try:
        while f.thread is not None and f.thread.is_alive():
            time.sleep(1.0)
            if time.time() < next_fault or f.seq > n - rate * 30:  # the last 30 s without a fault
                continue
            what = kinds[k % len(kinds)]
            k += 1
            faults.append((time.time() - sampler.t0, what))
            print(f"\n[{faults[-1][0] / 60:.1f} min] {what} ({f.seq} sent)", flush=True)
            if what == "worker SIGKILL":
                victim = live.pop(0)
                victim.kill()
                live.append(sc.worker(f"w{k}"))
            elif what == "Redis restart":
                stack.stop_redis(kill=False)
                time.sleep(2.0)
                stack.start_redis()
            elif what == "broker SIGKILL":
                try:
                    stack.stop_kafka(kill=True)
                    time.sleep(2.0)
                finally:
                    stack.start_kafka(timeout=180)
            else:
                joiner = sc.worker(f"w{k}")
                live.append(joiner)
                joiner.wait_ready(timeout=180)
                time.sleep(20)
                live.remove(joiner)
                joiner.terminate(timeout=60)
            next_fault = time.time() + every
        f.join(timeout=600)
        caught = wait_applied(sc.r, {u: min(BUFFER_LEN, len(v)) for u, v in f.expected().items()}, timeout=600)
        time.sleep(5.0)
    finally:
        sampler.stop()
    elapsed = time.time() - sampler.t0
    state = check_state(redis_sync(sc.s), f, cap=BUFFER_LEN)
    recs = check_recs(sc.s, f, sampler.t0 + (faults[0][0] if faults else 0.0), timeout=900)
    redis_mb = [r["redis_mb"] for r in sampler.rows if r["redis_mb"] is not None]
    tail = redis_mb[-max(1, len(redis_mb) // 4):]
    rss = {name: [r["rss_mb"][name] for r in sampler.rows if r["rss_mb"].get(name)] for name in
           {n for r in sampler.rows for n in r["rss_mb"]}}  # fmt: skip
    row = finish("soak", report, state, recs, events=n, rate=rate, minutes=round(elapsed / 60, 1),
                 faults=[f"{t / 60:.1f} min {w}" for t, w in faults], caught_up=caught > 0,
                 redis_mb_max=round(max(redis_mb), 1), redis_mb_last_quarter=[round(min(tail), 1), round(max(tail), 1)],
                 redis_bytes_per_user=round(tail[-1] * 2**20 / N_USERS),
                 worker_rss_mb={w: [round(min(v), 1), round(max(v), 1)] for w, v in sorted(rss.items())})
    plot(sampler.rows, faults, out, f"soak: {n:,} events at {rate:g}/s, {len(faults)} faults, {N_USERS} users "
                                    f"(buffer {BUFFER_LEN}); lost {row['lost']}, repeated {row['recs_repeated']}")
    (out.with_suffix(".json")).write_text(json.dumps({"row": row, "samples": sampler.rows}, indent=1))
    assert_exact(row, "\n".join(w.tail(3000) for w in live))
    assert max(tail) <= 1.05 * min(tail), f"Redis memory still growing in the last quarter: {row}"
    for name, v in rss.items():
        assert max(v) <= v[0] + sc.s.cache_mb + 300, f"worker {name}'s RSS grew past its cache bound: {row}"
