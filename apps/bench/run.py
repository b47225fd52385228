"""One measured run of the worker under load, its repeats, and their summary.

The generator produces events at ``rate`` events/s for ``duration_s`` seconds after
``warmup_s`` unmeasured ones; ``rate`` None ("max") sends as fast as it can while keeping at
most ``max_inflight`` events unanswered: a closed loop, so the backlog, and with it the latency
at saturation, stays bounded and the figure is the worker's throughput, not the broker's disk.
A paced run that falls 2 s behind stops offering and is marked saturated. The
:class:`~attnrec.apps.bench.tracker.CoverageTracker` matches recommendations to events.

Throughput = events covered inside the measured window (whoever produced them: at saturation
the worker is still working through warm-up events) / (window opening -> last covering rec).
Events produced during the warm-up count for ``lost`` but not for latency. The worker's own
count (``attnrec_events_total`` over the window) is reported beside it. The per-event stage
times come from the worker's Prometheus histograms (``/metrics``, diffed across the window);
worker CPU and RSS from psutil; Redis bytes per user from ``MEMORY USAGE`` of a sample of the
bench users' keys.

The repeats are summarised by :mod:`attnrec.apps.bench.summary`.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from attnrec.errors import AttnrecError

from .clients import produce, rd_producer
from .host import cpu_seconds, loadavg, stack_procs
from .load import EventSource, redis_bytes_per_user
from .settings import BenchSettings
from .tracker import HOPS, CoverageTracker
from .worker import Session, api_token, quiesce, scrape

__all__ = ["RunConfig", "run_once", "run_repeat", "run_repeated", "rate_label", "batch_sizes"]

log = logging.getLogger(__name__)



@dataclass(frozen=True)
class RunConfig:
    """One measured run. ``rate`` None = max (closed loop bounded by ``max_inflight``)."""

    rate: float | None = 1000.0
    duration_s: float = 10.0
    warmup_s: float = 2.0
    users: int = 2000
    max_inflight: int = 2000
    drain_timeout_s: float = 120.0
    drain_stall_s: float = 15.0
    seed: int = 7
    label: str = ""


def rate_label(rate: float | None) -> str:
    return "max" if rate is None else f"{rate:g}"


def _pct(xs: np.ndarray, q: float) -> float:
    return round(float(np.percentile(xs, q)), 2) if len(xs) else 0.0


def batch_sizes(d: dict[str, float], name: str) -> dict[str, Any] | None:
    """The share of batches in each size bucket (``le`` -> share) of a histogram's diff over
    the window, and its p50/p90 bucket bounds."""
    buckets = sorted((float(k.split('le="', 1)[1].split('"', 1)[0]), v) for k, v in d.items()
                     if k.startswith(name + '_bucket{'))  # fmt: skip
    total = d.get(f"{name}_count", 0.0)
    if not buckets or total <= 0:
        return None
    shares: dict[str, float] = {}
    prev = 0.0
    p50 = p90 = None
    for le, cum in buckets:
        label = "inf" if le == float("inf") else f"{le:g}"
        shares[label] = round((cum - prev) / total, 4)
        prev = cum
        if p50 is None and cum >= 0.5 * total:
            p50 = label
        if p90 is None and cum >= 0.9 * total:
            p90 = label
    return {"batches": int(total), "share_by_le": shares, "p50_le": p50, "p90_le": p90}


def shadow_figures(d: dict[str, float]) -> dict[str, Any] | None:
    """Shadow scoring over the window: batches scored, skipped because the shadow was busy or
    not sampled, and the shadow's mean scoring time per batch."""
    out = {o: int(d.get(f'attnrec_shadow_batches_total{{outcome="{o}"}}', 0.0)) for o in ("scored", "busy", "fraction")}
    if not any(out.values()):
        return None
    n = d.get("attnrec_shadow_score_ms_count", 0.0)
    rows = {g: int(d.get(f'attnrec_shadow_rows_total{{graph="{g}"}}', 0.0)) for g in ("step", "full", "lost")}
    return {**out, "mean_ms": round(d.get("attnrec_shadow_score_ms_sum", 0.0) / n, 2) if n else None, "rows": rows}


def cache_figures(d: dict[str, float], now: dict[str, float]) -> dict[str, Any] | None:
    """An incremental model's cache over the window: hits (step graph), misses (full graph),
    the hit rate, and the cache's size at the end."""
    hits, misses = d.get("attnrec_cache_hits_total", 0.0), d.get("attnrec_cache_misses_total", 0.0)
    if hits + misses <= 0:
        return None
    users = now.get("attnrec_cache_users", 0.0)
    size = now.get("attnrec_cache_bytes", 0.0)
    return {"hits": int(hits), "misses": int(misses), "hit_rate": round(hits / (hits + misses), 4),
            "users": int(users), "bytes": int(size), "bytes_per_user": round(size / users) if users else None}


def hop_summary(hops: list[tuple[float, ...]]) -> dict[str, Any] | None:
    """Median, p90 and mean ms of each hop (and of their sum) over the measured triggers."""
    if not hops:
        return None
    arr = np.asarray(hops, dtype=np.float64)
    out: dict[str, Any] = {"n": len(arr)}
    cols = [*HOPS, "total"]
    arr = np.column_stack([arr, arr.sum(axis=1)])
    for j, name in enumerate(cols):
        x = arr[:, j]
        out[name] = {"p50": round(float(np.percentile(x, 50)), 2), "p90": round(float(np.percentile(x, 90)), 2),
                     "mean": round(float(x.mean()), 2)}
    return out


def run_once(s: BenchSettings, cfg: RunConfig, *, items: Sequence[str], users: Sequence[str], worker_pid: int | None = None,
             metrics_url: str | None = None, progress: bool = True,
             model_info: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    """Drive one load level against a worker already consuming ``s.clicks_topic``."""
    import psutil
    from tqdm import tqdm

    token = api_token(s)
    tracker = CoverageTracker(s).start()
    wproc = psutil.Process(worker_pid) if worker_pid else None
    others = stack_procs(s)
    oc0: dict[str, float] = {}
    me = psutil.Process()
    src = iter(EventSource(items, users, seed=cfg.seed))
    # paced: a short linger (each ms of it adds up to a ms to every latency, the null agent's too;
    # none at all makes every event a produce request, whose CPU in the generator and the broker
    # starves the worker on a small box); max: 5 ms batches, for the generator's own throughput
    producer = rd_producer(s, linger_ms=s.bench_generator_linger_ms if cfg.rate else 5)
    load_before = loadavg()
    m0: dict[str, float] = {}
    cpu0 = me0 = 0.0
    rss_max = 0
    total = int(cfg.rate * (cfg.warmup_s + cfg.duration_s)) if cfg.rate else None
    bar = tqdm(total=total, unit="ev", desc=cfg.label or "bench", mininterval=0.5, disable=not progress, leave=False)
    t_start = time.perf_counter()
    t_measure = t_start + cfg.warmup_s
    t_end = t_measure + cfg.duration_s
    measuring = cfg.warmup_s <= 0
    overloaded = False
    tm0 = t_measure
    backlog_cap = max(cfg.max_inflight, int(2 * (cfg.rate or 0)))  # paced: stop once 2 s behind
    n = shown = polled = 0

    def open_window() -> None:
        nonlocal tm0, m0, cpu0, me0, oc0
        tracker.t_measure = tm0 = time.perf_counter()
        m0 = scrape(metrics_url, token) if metrics_url else {}
        cpu0, me0 = (cpu_seconds(wproc) if wproc else 0.0), cpu_seconds(me, children=False)
        oc0 = {k: cpu_seconds(p) for k, p in others.items()}

    try:
        if measuring:
            open_window()
        while True:
            now = time.perf_counter()
            if now >= t_end:
                break
            if not measuring and now >= t_measure:
                measuring = True
                open_window()
            if cfg.rate:
                if n - tracker.done > backlog_cap:
                    overloaded = True  # far beyond capacity: stop offering, the point is saturated
                    break
                # every event due by now, at once; then sleep until the next one is due (no spinning)
                due = int((now - t_start) * cfg.rate) + 1 - n
                if due <= 0:
                    time.sleep(max(0.0, min((n + 1) / cfg.rate - (now - t_start), t_end - now)))
                    continue
            else:
                due = min(500, cfg.max_inflight - (n - tracker.done))
                if due <= 0:
                    time.sleep(0.001)
                    continue
            for _ in range(due):
                eid, user, key, value = next(src)
                tracker.sent(eid, user, time.perf_counter(), measuring)
                produce(producer, s.clicks_topic, key, value)
            n += due
            producer.poll(0)  # serve librdkafka's (error-only) delivery reports
            if n - shown >= 200:
                bar.update(n - shown)
                shown = n
                if n - polled >= 2000:
                    polled = n
                    bar.set_postfix(done=tracker.done, refresh=False)
                    if wproc is not None:
                        try:
                            rss_max = max(rss_max, wproc.memory_info().rss)
                        except psutil.Error:
                            pass
        t_sent = time.perf_counter()
        if producer.flush(60):
            raise AttnrecError("the load generator could not deliver its events within 60 s")
        # drain: wait until every event is covered or dead-lettered, as long as the worker
        # makes progress (no new answer for drain_stall_s, or drain_timeout_s in all: stop)
        deadline = time.monotonic() + cfg.drain_timeout_s
        last_done, last_change = tracker.done, time.monotonic()
        while tracker.done < tracker.n_sent and time.monotonic() < deadline:
            if wproc is not None and not wproc.is_running():
                raise AttnrecError("the worker died during the run")
            time.sleep(0.02)
            if tracker.done != last_done:
                last_done, last_change = tracker.done, time.monotonic()
            elif time.monotonic() - last_change > cfg.drain_stall_s:
                break
        bar.update(n - shown)
    finally:
        bar.close()
        tracker.stop()
    m1 = scrape(metrics_url, token) if metrics_url else {}
    tm1 = time.perf_counter()
    cpu1, me1 = (cpu_seconds(wproc) if wproc else 0.0), cpu_seconds(me, children=False)
    oc1 = {k: cpu_seconds(p) for k, p in others.items()}
    if wproc is not None:
        try:
            rss_max = max(rss_max, wproc.memory_info().rss)
        except psutil.Error:
            pass
    lat = np.asarray(tracker.latencies, dtype=np.float64)
    # throughput: every event covered inside the measured window (the worker's rate, whoever
    # produced the event) over the window from its opening to the last covering rec
    t0 = tracker.t_measure or tm0
    t1 = tracker.last_cover or t0
    span = max(1e-9, t1 - t0)
    n_meas = tracker.n_measured_covered
    n_win = tracker.window_covered
    d = {k: m1.get(k, 0.0) - m0.get(k, 0.0) for k in set(m1) | set(m0)}
    ev_done = d.get("attnrec_events_total", 0.0)
    batches = d.get("attnrec_batch_size_count", 0.0)
    stages: dict[str, float] | None = None
    if ev_done > 0:
        stages = {st: round(1000.0 * d.get(f"attnrec_{st}_ms_sum", 0.0) / ev_done, 1)
                  for st in ("redis", "model", "produce")}  # fmt: skip
        if wproc is not None:
            stages["worker_cpu"] = round(1e6 * (cpu1 - cpu0) / ev_done, 1)
    window = max(1e-9, tm1 - tm0)  # between the two /metrics scrapes
    res: dict[str, Any] = {
        "label": cfg.label,
        "events": n_meas,
        "duration_s": round(span, 3),
        "events_per_s": round(n_win / span, 1) if n_win else 0.0,
        "events_covered_in_window": n_win,
        "worker_events_per_s": round(ev_done / window, 1) if ev_done else None,
        "offered_rate": cfg.rate if cfg.rate else round(tracker.n_sent / max(1e-9, t_sent - t_start), 1),
        "rate_mode": "paced" if cfg.rate else f"max (closed loop, <= {cfg.max_inflight} in flight)",
        "saturated": bool(overloaded or (cfg.rate is not None and n_win / span < 0.9 * cfg.rate)),
        "overloaded_stop": overloaded,
        "latency_ms": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "p99": _pct(lat, 99),
                       "max": round(float(lat.max()), 2) if len(lat) else 0.0,
                       "mean": round(float(lat.mean()), 2) if len(lat) else 0.0},  # fmt: skip
        "catalog_items": (model_info or {}).get("catalog_items"),
        "max_len": (model_info or {}).get("max_len"),
        "workers": 1,
        "lost": tracker.lost(),
        "duplicates": tracker.duplicates,
        "produced": tracker.n_sent,
        "dead_letters": tracker.n_dead,
        "fallback_recs": tracker.fallbacks,
        "recs": tracker.recs,
        "stale_recs": tracker.stale,
        "unmatched_recs": tracker.unmatched,
        "batch_size": s.batch_size,
        "batch_wait_ms": s.batch_wait_ms,
        "generator_linger_ms": s.bench_generator_linger_ms if cfg.rate else 5,
        "worker_settings": {k: getattr(s, k) for k in ("batch_size", "batch_wait_ms", "buffer_len", "redis_timeout_s",
                                                       "ort_threads", "partitions", "top_k", "exclude_seen",
                                                       "processing_guarantee")},
        "mean_batch": round(ev_done / batches, 1) if batches else None,
        "transactions_per_s": round(d.get("attnrec_transactions_total", 0.0) / window, 1) if ev_done else None,
        "batch_sizes": batch_sizes(d, "attnrec_batch_size"),
        "cache": cache_figures(d, m1),
        "shadow": shadow_figures(d),
        "hops_ms": hop_summary(tracker.hops),
        "stage_us_per_event": stages,
        "worker_cpu_cores": round((cpu1 - cpu0) / window, 2) if wproc is not None else None,
        "worker_rss_mb": round(rss_max / 2**20, 1) if rss_max else None,
        "generator_cpu_cores": round((me1 - me0) / window, 2),
        # CPU per event of everything on the box that serves this run (worker, Kafka, Redis, generator+tracker)
        "cpu_us_per_event": ({"worker": round(1e6 * (cpu1 - cpu0) / ev_done, 1) if wproc is not None else None,
                              **{k: round(1e6 * (oc1[k] - oc0.get(k, oc1[k])) / ev_done, 1) for k in oc1},
                              "generator": round(1e6 * (me1 - me0) / ev_done, 1)} if ev_done else None),  # fmt: skip
        "redis_bytes_per_user": redis_bytes_per_user(s, users),
        "users": len(users),
        "load_avg_before": load_before,
        "load_avg_after": loadavg(),
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    res.update({k: v for k, v in (model_info or {}).items() if k not in res})
    return res


def warm_caches(sess: Session, timeout_s: float = 180.0) -> dict[str, Any]:
    """One event for every user, then wait until each is answered: an incremental model's
    worker then holds every user's key/value cache, the steady state of a serving worker
    (its users' caches warm). Returns the events sent, answered and the seconds it took."""
    tracker = CoverageTracker(sess.s).start()
    src = EventSource(sess.items, sess.users, seed=999)
    producer = rd_producer(sess.s, linger_ms=5)
    t0 = time.monotonic()
    try:
        for eid, user, key, value in src.one_per_user():
            tracker.sent(eid, user, time.perf_counter(), False)
            produce(producer, sess.s.clicks_topic, key, value)
        producer.flush(60)
        while tracker.done < tracker.n_sent and time.monotonic() - t0 < timeout_s:
            time.sleep(0.05)
    finally:
        tracker.stop()
    out = {"sent": tracker.n_sent, "answered": tracker.done, "seconds": round(time.monotonic() - t0, 1)}
    log.info("warmed %d users' caches in %.1fs", tracker.done, out["seconds"])
    return out


def run_repeat(sess: Session, cfg: RunConfig, r: int, progress: bool) -> dict[str, Any]:
    """Repeat ``r`` (0-based; seed ``cfg.seed + r``) of ``cfg``, after the worker's backlog of
    the previous run is gone."""
    waited = quiesce(sess.metrics_url, token=api_token(sess.s))
    if waited > 5:
        log.info("waited %.0fs for the worker to finish the previous run's backlog", waited)
    c = replace(cfg, seed=cfg.seed + r, label=f"{cfg.label} #{r + 1}")
    res = run_once(sess.s, c, items=sess.items, users=sess.users, worker_pid=sess.worker_pid,
                   metrics_url=sess.metrics_url, progress=progress, model_info=sess.info)  # fmt: skip
    res["repeat"] = r + 1
    res["quiesce_wait_s"] = waited
    res["agent"] = sess.info.get("agent", "worker")
    log.info("%s: %.0f ev/s, p50 %.1f p99 %.1f ms, lost %d, dup %d, load %s", c.label, res["events_per_s"],
             res["latency_ms"]["p50"], res["latency_ms"]["p99"], res["lost"], res["duplicates"],
             res["load_avg_after"])  # fmt: skip
    if res.get("overloaded_stop"):
        log.warning("%s: stopped early: the agent fell more than 2 s behind the offered %s events/s (saturated: its "
                    "capacity is what --rate max measures)", c.label, c.rate)  # fmt: skip
    if sess.worker is not None and sess.worker.proc.poll() is not None:
        raise AttnrecError(f"worker exited:\n{sess.worker.tail()}")
    return res


def run_repeated(sess: Session, cfg: RunConfig, repeats: int, progress: bool) -> list[dict[str, Any]]:
    """``repeats`` runs of ``cfg`` (seeds ``cfg.seed``, +1, ...), one after the other."""
    return [run_repeat(sess, cfg, r, progress) for r in range(repeats)]
