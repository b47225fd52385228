"""The repeats of one configuration, summarised: each figure is the median of the repeats with
their min and max (:func:`summarise`); a spread above 15% is flagged, because the box is shared
and one noisy run should not pass for the figure."""

from __future__ import annotations

import statistics
from typing import Any

__all__ = ["summarise", "worker_eps", "SUMMARY_KEYS", "SPREAD_WARN"]

#: A repeat spread (max - min) / median above this is flagged in the summary's warnings.
SPREAD_WARN = 0.15
SUMMARY_KEYS = ("events_per_s", "p50", "p95", "p99", "max")


def _get(r: dict[str, Any], k: str) -> float:
    return float(r["latency_ms"][k] if k in ("p50", "p95", "p99", "max") else r[k])


def worker_eps(r: dict[str, Any]) -> float | None:
    """The worker's own events/s; for older JSON derived from its CPU cores / CPU per event."""
    if r.get("worker_events_per_s"):
        return float(r["worker_events_per_s"])
    st = r.get("stage_us_per_event") or {}
    if r.get("worker_cpu_cores") and st.get("worker_cpu"):
        return 1e6 * float(r["worker_cpu_cores"]) / float(st["worker_cpu"])
    return None


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min, max of each figure over repeats; a warning when the spread exceeds 15%."""
    out: dict[str, Any] = {"n": len(runs), "warnings": []}
    for k in SUMMARY_KEYS:
        xs = [_get(r, k) for r in runs]
        med = statistics.median(xs)
        out[k] = {"median": round(med, 2), "min": round(min(xs), 2), "max": round(max(xs), 2)}
        spread = (max(xs) - min(xs)) / med if med else 0.0
        out[k]["spread"] = round(spread, 3)
        if len(xs) > 1 and spread > SPREAD_WARN and k != "max":
            out["warnings"].append(f"{k} spread {100 * spread:.0f}% > {100 * SPREAD_WARN:.0f}%")
    for k in ("lost", "duplicates"):
        out[k] = int(sum(r[k] for r in runs))
    out["saturated"] = any(r.get("saturated") for r in runs)
    wev = [x for x in (worker_eps(r) for r in runs) if x]
    if wev:
        out["worker_events_per_s"] = round(statistics.median(wev), 1)
    for k in ("offered_rate", "catalog_items", "max_len", "batch_size", "scorer", "mean_batch", "worker_cpu_cores",
              "worker_rss_mb", "redis_bytes_per_user", "generator_cpu_cores", "transactions_per_s"):
        vals = [r[k] for r in runs if r.get(k) is not None]
        if vals:
            out[k] = statistics.median(vals) if isinstance(vals[0], (int, float)) else vals[0]
    cu = [r["cpu_us_per_event"] for r in runs if r.get("cpu_us_per_event")]
    if cu:
        out["cpu_us_per_event"] = {k: round(statistics.median(x[k] for x in cu if x.get(k) is not None), 1)
                                   for k in cu[0] if any(x.get(k) is not None for x in cu)}  # fmt: skip
    st = [r["stage_us_per_event"] for r in runs if r.get("stage_us_per_event")]
    if st:
        out["stage_us_per_event"] = {k: round(statistics.median(x.get(k, 0.0) for x in st), 1) for k in st[0]}
    out["load_avg"] = [r["load_avg_after"][0] for r in runs if r.get("load_avg_after")]
    out["agent"] = runs[0].get("agent", "worker") if runs else "worker"
    if runs and out["agent"] == "worker":
        out["processing_guarantee"] = (runs[0].get("worker_settings") or {}).get("processing_guarantee")
    hops = [r["hops_ms"] for r in runs if r.get("hops_ms")]
    if hops:  # per hop: the median over the runs of each run's p50 and p90
        out["hops_ms"] = {h: {q: round(statistics.median(x[h][q] for x in hops), 2) for q in ("p50", "p90")}
                          for h in hops[0] if h != "n"}  # fmt: skip
    med = sorted(runs, key=lambda r: r["events_per_s"])[len(runs) // 2] if runs else {}
    if med.get("batch_sizes"):
        out["batch_sizes"] = med["batch_sizes"]  # the median run's distribution
    return out
