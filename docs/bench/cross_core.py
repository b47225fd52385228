"""Does work on one CPU slow the other? The serving path's kind of kernel (a batch of 64 queries
against a 12,000 x 64 item table, then an argmax: what the step graph spends its time on) timed
on CPU 0 alone, beside a pure-Python spin on CPU 1 (no memory traffic) and beside the same
kernel on CPU 1 (what a shadow model scoring on the otherwise idle CPU does). Scheduling
priority (SCHED_IDLE) decides who gets a CPU, not what two busy CPUs do to each other's caches
and memory bandwidth; docs/BENCHMARKS.md, "Shadow scoring".

    .venv/bin/python docs/bench/cross_core.py [--repeats 5]

Needs two CPUs; prints one line per condition (median and min of the repeats, milliseconds).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import time
from typing import Any

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):  # one thread, as the graphs run
    os.environ[_var] = "1"

import numpy as np  # noqa: E402  (after the thread settings)


def kernel(rounds: int = 40) -> float:
    """Seconds for ``rounds`` of (12,000 x 64) @ (64 x 64) and an argmax per query."""
    rng = np.random.default_rng(0)
    table = rng.random((12000, 64), dtype=np.float32)
    queries = rng.random((64, 64), dtype=np.float32)
    t0 = time.perf_counter()
    for _ in range(rounds):
        (table @ queries).argmax(0)
    return time.perf_counter() - t0


def _spin(stop: Any) -> None:
    os.sched_setaffinity(0, {1})
    x = 0
    while not stop.is_set():
        x += 1


def _same_kernel(stop: Any) -> None:
    os.sched_setaffinity(0, {1})
    while not stop.is_set():
        kernel(4)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if len(os.sched_getaffinity(0)) < 2:
        print("error: needs two CPUs (0 and 1)")
        return 2
    os.sched_setaffinity(0, {0})
    for name, target in (("alone", None), ("beside a Python spin on CPU 1", _spin),
                         ("beside the same kernel on CPU 1", _same_kernel), ("alone again", None)):
        stop = mp.Event()
        proc = mp.Process(target=target, args=(stop,)) if target else None
        if proc is not None:
            proc.start()
            time.sleep(0.5)
        times = sorted(kernel() for _ in range(args.repeats))
        if proc is not None:
            stop.set()
            proc.join()
        print(f"{name:32} median {1000 * times[len(times) // 2]:.1f} ms (min {1000 * times[0]:.1f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
