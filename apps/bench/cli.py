"""``attnrec bench``: what one invocation does, from its settings.

Every option is a field of :class:`~attnrec.apps.bench.settings.BenchSettings` (``bench_*``, plus the
worker's own ``batch_size`` and ``scorer``); the flags are generated from them by :mod:`attnrec.apps.cli`.
One invocation is one of: the generator alone (``bench_generator_only``); re-rendering saved
sweeps (``bench_render``); the sweep (``bench_sweep``); or one configuration, repeated, with its
baselines (``bench_baselines``: the same worker with B=1, with the torch-eager scorer, and the
null agent, the framework's floor), and optionally backlog drains (``bench_drain``).
``bench_start_stack`` brings the local stack up first and down after.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import statistics
import sys
from dataclasses import replace
from typing import Any

from attnrec.settings import parse_rate

from .drain import drain_once
from .load import generator_ceiling
from .models import ensure_model, registry_model, shadow_registry
from .report import benchmarks_section, machine_info, merge_reports, plot, resummarise, update_benchmarks_md
from .run import RunConfig, rate_label, run_repeat, warm_caches
from .settings import BenchSettings
from .summary import summarise
from .sweep import SweepPlan, run_sweep
from .worker import open_session

__all__ = ["cmd_bench", "headline"]

log = logging.getLogger(__name__)


def cmd_bench(s: BenchSettings, args: argparse.Namespace) -> int:
    """Run the bench the settings describe; print its headline, write ``bench_json`` if set."""
    stack = None
    if s.bench_start_stack:
        from ..stack import local_stack

        stack = local_stack(s)
        stack.up()
        s = s.model_copy(update={"kafka_bootstrap": stack.bootstrap, "redis_url": stack.redis_url})
    try:
        report = bench(s)
    finally:
        if stack is not None:
            stack.down()
    if s.bench_json:
        s.bench_json.parent.mkdir(parents=True, exist_ok=True)
        s.bench_json.write_text(json.dumps(report, indent=1))
    print(headline(report))
    return 0


def headline(rep: dict[str, Any]) -> str:
    """One line: the report's key figures."""
    if "generator_alone" in rep and "events_per_s" not in rep:
        g = rep["generator_alone"]
        return f"generator alone: {g['events_per_s']:.0f} events/s ({g['cpu_cores']} cores)"
    lat = rep.get("latency_ms", {})
    lines = [f"{rep.get('events_per_s', 0):.0f} events/s sustained (offered {rep.get('offered_rate')}), latency p50 "
             f"{lat.get('p50')} p95 {lat.get('p95')} p99 {lat.get('p99')} max {lat.get('max')} ms, "
             f"lost {rep.get('lost')}, duplicates {rep.get('duplicates')}"]  # fmt: skip
    sums = [x for x in rep.get("summaries", []) if "events_per_s" in x]
    if len(sums) > 1:
        lines.append(f"{'':16} {'events/s':>18} {'p50 ms':>18} {'p99 ms':>18} {'worker CPU µs/ev':>16} {'mean batch':>10}")
        for sm in sums:
            who = (f"{sm.get('scorer')} B={sm.get('batch_size')}" + ("" if sm.get("processing_guarantee") != "at_least_once" else " ALO")
                   if sm.get("agent") not in ("null", "plain") else f"{sm.get('agent')} agent")
            cpu = (sm.get("cpu_us_per_event") or {}).get("worker")
            lines.append(f"{who:16} {_mmm(sm['events_per_s'], 0):>18} {_mmm(sm['p50'], 1):>18} {_mmm(sm['p99'], 1):>18} "
                         f"{cpu if cpu is not None else '–':>16} {sm.get('mean_batch') or '–':>10}")
    for floor in ("null", "plain"):
        if rep.get(f"vs_{floor}"):
            lines.append(f"attnrec / {floor} agent (paired runs, median (min–max)): " + ", ".join(
                f"{k} {_mmm(v, 2)}" for k, v in rep[f"vs_{floor}"].items()))
    head_hops = (sums[0].get("hops_ms") if sums else None) or {}
    if head_hops:
        lines.append("hops, p50 ms: " + ", ".join(f"{k} {v['p50']}" for k, v in head_hops.items()))
    if rep.get("drain"):
        d = rep["drain"]
        lines.append("backlog drain events/s: " + ", ".join(f"{a} {_mmm(d[a], 0)}" for a in ("worker", "null") if a in d)
                     + (f"; ratio {_mmm(d['ratio'], 2)}" if "ratio" in d else ""))
    return "\n".join(lines)


def _mmm(v: dict[str, Any], digits: int) -> str:
    """``median (min–max)``."""
    f = f"{{:.{digits}f}}"
    return f"{f.format(v['median'])} ({f.format(v['min'])}–{f.format(v['max'])})"


def bench(s: BenchSettings) -> dict[str, Any]:
    """The report of the bench ``s`` describes (see the module docstring)."""
    if s.bench_generator_only:
        return {"generator_alone": generator_ceiling(s, s.bench_duration), "machine": machine_info()}
    if s.bench_render:
        return render(s)
    if s.bench_sweep:
        return sweep(s)
    return single(s)


def render(s: BenchSettings) -> dict[str, Any]:
    """Re-render the plot and the BENCHMARKS.md section from saved sweep JSONs (runs merged, the
    first file's machine); ``docs/bench/notes.md``-style hand-written findings are appended."""
    assert s.bench_render
    rep = resummarise(merge_reports([json.loads(p.read_text()) for p in s.bench_render]))
    key = resummarise(json.loads(s.bench_render_key.read_text())) if s.bench_render_key else None
    png = plot(rep, s.bench_out_dir / "latency_vs_load.png")
    rep["plot"] = str(png) if png else None
    notes = s.bench_out_dir / "notes.md"  # hand-written findings, kept next to the data
    body = benchmarks_section(rep, rep.get("command", ""), key)
    if notes.is_file():
        body += "\n" + notes.read_text()
    update_benchmarks_md(s.bench_md, body)
    return rep


def _shapes(text: str) -> list[tuple[int, int]]:
    """``"3000x50,100000x50"`` -> ``[(3000, 50), (100000, 50)]``."""
    return [(int(a), int(b)) for a, b in (re.split("[xX]", x.strip()) for x in text.split(","))]


def sweep(s: BenchSettings) -> dict[str, Any]:
    """The ``make bench`` matrix; writes ``bench.json`` and the plot to ``bench_out_dir`` and,
    unless ``bench_no_md``, the section of ``bench_md``."""
    plan = SweepPlan(repeats=max(3, s.bench_repeats), duration_s=s.bench_duration, warmup_s=s.bench_warmup,
                     baselines=not s.bench_no_baselines_in_sweep, stages=not s.bench_no_stages,
                     ladder=tuple(parse_rate(x) for x in s.bench_sweep_ladder.split(",")),
                     short_ladder=tuple(parse_rate(x) for x in s.bench_sweep_short_ladder.split(",")),
                     drain_timeout_s=s.bench_drain_timeout, key_runs=not s.bench_shapes_only,
                     stages_only=s.bench_stages_only)  # fmt: skip
    if s.bench_sweep_shapes:
        plan.shapes = _shapes(s.bench_sweep_shapes)
    out_dir = s.bench_out_dir
    rep = run_sweep(s, plan, cache=s.bench_cache_dir.resolve(), users=s.bench_users, progress=_progress(s),
                    out_dir=out_dir, worker_src=s.bench_worker_src)  # fmt: skip
    rep["command"] = " ".join(["attnrec"] + sys.argv[1:])
    png = plot(rep, out_dir / "latency_vs_load.png")
    rep["plot"] = str(png) if png else None
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(rep, indent=1))
    if not s.bench_no_md:
        update_benchmarks_md(s.bench_md, benchmarks_section(rep, rep["command"]))
    return rep


def _variants(s: BenchSettings) -> list[tuple[str, BenchSettings]]:
    """(agent, settings) of each configuration one invocation measures: the configured worker,
    and with ``bench_baselines`` the same worker one event at a time (B=1), with the torch-eager
    scorer, with the other processing guarantee, shadow-scoring a second model (agent
    ``shadow``: a worker on a registry with a SHADOW version), and the null agent (the framework
    alone: no Redis, no model)."""
    out = [(s.bench_agent, s)]
    if s.bench_baselines and s.bench_agent == "worker":
        which = set(s.bench_baseline_set.split(","))
        other = "at_least_once" if s.processing_guarantee == "exactly_once" else "exactly_once"
        for name, upd in (("b1", {"scorer": "onnx", "batch_size": 1}), ("torch", {"scorer": "torch"}),
                          ("guarantee", {"processing_guarantee": other})):
            v = s.model_copy(update=upd)
            key = (v.scorer, v.batch_size, v.processing_guarantee)
            if name in which and all(key != (x.scorer, x.batch_size, x.processing_guarantee) for _, x in out):
                out.append(("worker", v))
        if "shadow" in which:
            out.append(("shadow", s))
        if "null" in which:
            out.append(("null", s))
        if "plain" in which:
            out.append(("plain", s))
    return out


def _label(agent: str, v: BenchSettings, rate: float | None) -> str:
    who = f"{v.scorer} B={v.batch_size}" if agent in ("worker", "shadow") else f"{agent} B={v.batch_size}"
    if agent in ("worker", "shadow") and v.processing_guarantee != "exactly_once":
        who += " at-least-once"
    if agent == "shadow":
        who += f" +shadow {v.shadow_fraction:.0%}"
    return f"{who} @{rate_label(rate)}"


def vs_null(worker_runs: list[dict[str, Any]], null_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The worker's figures as multiples of the null agent's, paired run by run (repeat i with
    repeat i, measured back to back), then the median: p50, p99, events/s and worker CPU/event."""
    def fig(r: dict[str, Any], k: str) -> float | None:
        if k in ("p50", "p99"):
            return float(r["latency_ms"][k])
        if k == "cpu_us_per_event":
            return (r.get("cpu_us_per_event") or {}).get("worker")
        return float(r[k])

    out: dict[str, Any] = {}
    for k in ("p50", "p99", "events_per_s", "cpu_us_per_event"):
        pairs = [(fig(a, k), fig(b, k)) for a, b in zip(worker_runs, null_runs, strict=False)]
        ratios = [x / y for x, y in pairs if x is not None and y]
        if ratios:
            out[k] = {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                      "max": round(max(ratios), 2)}
    return out


def single(s: BenchSettings) -> dict[str, Any]:
    """One configuration (``batch_size``, ``scorer``) at ``bench_rate``, ``bench_repeats`` times,
    plus its baselines, all in one run: every variant's worker is up for the whole run and the
    repeats go round the variants (worker #1, baselines #1, worker #2, ...), so each ratio pairs
    runs taken back to back. The report is the configured worker's median run, with every run,
    the summaries, the ratios and (``bench_drain``) the backlog drains."""
    cache = s.bench_cache_dir.resolve()
    if s.bench_model == "registry" or s.bench_no_worker:
        reg, items, n_items, L = registry_model(s.registry_dir)
    else:
        reg, items = ensure_model(cache, s.bench_catalog, s.bench_max_len, d_model=s.bench_d_model, positions=s.bench_positions,
                                  n_blocks=s.bench_blocks)  # fmt: skip
        n_items, L = s.bench_catalog, s.bench_max_len
    rate = parse_rate(s.bench_rate)
    cfg = RunConfig(rate=rate, duration_s=s.bench_duration, warmup_s=s.bench_warmup, users=s.bench_users,
                    max_inflight=s.bench_max_inflight, drain_timeout_s=s.bench_drain_timeout)  # fmt: skip
    variants = _variants(s)
    sessions = []
    runs: list[list[dict[str, Any]]] = [[] for _ in variants]
    drains: list[dict[str, Any]] = []
    try:
        for agent, v in variants:
            sessions.append(open_session(v, registry=shadow_registry(reg) if agent == "shadow" else reg, items=items, n_users=s.bench_users, log_dir=cache / "logs",
                                         catalog_items=n_items, max_len=L, start_worker=not s.bench_no_worker,
                                         metrics_url=s.bench_metrics_url, worker_pid=s.bench_worker_pid,
                                         prefill_len=s.bench_prefill, worker_src=s.bench_worker_src,
                                         agent="worker" if agent == "shadow" else agent))
        if s.bench_warm:
            for (agent, _v), sess in zip(variants, sessions, strict=True):
                if agent in ("worker", "shadow") and sess.worker is not None:
                    sess.info["warm"] = warm_caches(sess)
        if s.bench_warm_round:
            warm = replace(cfg, duration_s=min(cfg.duration_s, 10.0), warmup_s=min(cfg.warmup_s, 2.0))
            for i, (agent, v) in enumerate(variants):
                run_repeat(sessions[i], replace(warm, label=_label(agent, v, rate) + " (warm-up, not measured)"), -1, False)
        for r in range(s.bench_repeats):
            for i, (agent, v) in enumerate(variants):
                runs[i].append(run_repeat(sessions[i], replace(cfg, label=_label(agent, v, rate)), r, _progress(s)))
        for r in range(s.bench_repeats if s.bench_drain else 0):
            for agent in ("worker", "null"):
                drains.append(drain_once(s, registry=reg, items=items, users=sessions[0].users, events=s.bench_drain,
                                         agent=agent, log_dir=cache / "logs", seed=100 + r))
    finally:
        for sess in sessions:
            sess.close(s.bench_keep_state)
    groups = []
    for (agent, _v), rs in zip(variants, runs, strict=True):
        sm = summarise(rs)
        sm["rate_label"] = rate_label(rate)
        sm["agent"] = agent
        groups.append({"summary": sm, "runs": rs})
    head = groups[0]
    med = sorted(head["runs"], key=lambda r: r["events_per_s"])[len(head["runs"]) // 2]
    rep = dict(med)
    rep["lost"] = head["summary"]["lost"]
    rep["duplicates"] = head["summary"]["duplicates"]
    rep["machine"] = machine_info()
    rep["summaries"] = [g["summary"] for g in groups]
    rep["runs"] = [r for g in groups for r in g["runs"]]
    if len(groups) > 1:
        base_eps = head["summary"]["events_per_s"]["median"]
        rep["ratios"] = {_label(a, v, rate).rsplit(" @", 1)[0]:
                         round(base_eps / max(1e-9, g["summary"]["events_per_s"]["median"]), 2)
                         for (a, v), g in zip(variants[1:], groups[1:], strict=True)}  # fmt: skip
    for floor in ("null", "plain"):
        got = [g for (a, _), g in zip(variants, groups, strict=True) if a == floor]
        if got:
            rep[f"{floor}_agent"] = got[0]["summary"]
            rep[f"vs_{floor}"] = vs_null(head["runs"], got[0]["runs"])
    if drains:
        rep["drain"] = _drain_summary(drains)
    for w in head["summary"]["warnings"]:
        log.warning("%s", w)
    return rep


def _drain_summary(drains: list[dict[str, Any]]) -> dict[str, Any]:
    """Median (min, max) drain rate per agent, and the worker/null ratio paired run by run."""
    by: dict[str, list[dict[str, Any]]] = {}
    for d in drains:
        by.setdefault(d["agent"], []).append(d)
    out: dict[str, Any] = {"runs": drains}
    for agent, ds in by.items():
        xs = [d["events_per_s"] for d in ds]
        out[agent] = {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}
    ratios = [w["events_per_s"] / n["events_per_s"] for w, n in zip(by.get("worker", []), by.get("null", []),
                                                                      strict=False) if n["events_per_s"]]
    if ratios:
        out["ratio"] = {"median": round(statistics.median(ratios), 2), "min": round(min(ratios), 2),
                        "max": round(max(ratios), 2)}
    return out


def _progress(s: BenchSettings) -> bool:
    return not s.quiet and sys.stderr.isatty()
