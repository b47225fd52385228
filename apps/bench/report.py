"""The bench's reports: the machine they ran on, sweep reports merged and re-summarised, the plot,
and the generated section of docs/BENCHMARKS.md.

A figure without its box is meaningless here (everything shares two cores), so every report
carries :func:`machine_info` (CPU model, cores, memory, the commit and whether the product's
folders had uncommitted changes) and every row its load average. ``--render`` rebuilds the plot
and the Markdown from saved sweep JSONs without measuring anything again.
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import subprocess
from pathlib import Path
from typing import Any

from .summary import summarise, worker_eps

__all__ = ["machine_info", "merge_reports", "resummarise", "markdown_rows", "plot", "METHOD_MD", "SECTION",
           "benchmarks_section", "update_benchmarks_md", "short_error"]

log = logging.getLogger(__name__)

#: The folders whose uncommitted changes make a figure not the commit's.
PRODUCT_DIRS = ("stream", "attnrec", "training", "exporter", "apps")
#: The heading of the section of docs/BENCHMARKS.md this module rewrites.
SECTION = "## End-to-end throughput and latency"


# --------------------------------------------------------------------------------- machine
def machine_info() -> dict[str, Any]:
    import psutil

    from ..stack import REPO_ROOT

    model = platform.processor() or ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=5).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
                break
    except (OSError, subprocess.SubprocessError):
        pass
    commit = ""
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                                timeout=5).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *PRODUCT_DIRS], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=5).stdout.strip()  # fmt: skip
        dirs = [d + "/" for d in PRODUCT_DIRS]
        commit += f" ({', '.join(dirs[:-1])} or {dirs[-1]} modified)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        pass
    return {"cpu_model": model, "cores": os.cpu_count(), "git": commit,
            "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(), "platform": platform.platform()}  # fmt: skip


# --------------------------------------------------------------------------------- aggregation
def merge_reports(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """Several sweep reports as one: runs and stage profiles concatenated; an error row is dropped
    when a later report measured that shape."""
    if len(reps) == 1:
        return reps[0]
    out = dict(reps[0])
    out["runs"] = [r for rep in reps for r in rep.get("runs", [])]
    latest: dict[tuple[Any, ...], dict[str, Any]] = {}  # a later profile of the same step replaces an earlier one
    for rep in reps:
        for sp in rep.get("stage_profiles", []):
            latest[(sp["scorer"], sp["batch_size"], sp.get("catalog_items"), sp.get("max_len"))] = sp
    out["stage_profiles"] = list(latest.values())
    measured = {(r.get("catalog_items"), r.get("max_len")) for r in out["runs"]}
    out["summaries"] = [x for rep in reps for x in rep.get("summaries", [])
                        if "error" not in x or (x.get("catalog_items"), x.get("max_len")) not in measured]  # fmt: skip
    out["finished_at"] = max(rep.get("finished_at", "") for rep in reps)
    out["command"] = " ; ".join(rep.get("command", "") for rep in reps if rep.get("command"))
    out["parts"] = [{k: rep.get(k) for k in ("started_at", "finished_at", "command", "generator_alone")}
                    for rep in reps]  # fmt: skip
    return out


def resummarise(rep: dict[str, Any]) -> dict[str, Any]:
    """Recompute the summaries of a report from its runs (grouped by label without ``#n``)."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rep.get("runs", []):
        groups.setdefault(r["label"].rsplit(" #", 1)[0], []).append(r)
    if not groups:
        return rep
    sums = []
    for label, runs in groups.items():
        sm = summarise(runs)
        sm["label"] = label
        sm["rate_label"] = label.rsplit("@", 1)[-1]
        sm["scorer"] = runs[0].get("scorer", sm.get("scorer"))
        for k in ("batch_size", "catalog_items", "max_len"):
            sm[k] = runs[0].get(k)
        sums.append(sm)
    sums += [x for x in rep.get("summaries", []) if "error" in x]
    return {**rep, "summaries": sums}


def short_error(exc: BaseException) -> str:
    """The last meaningful line of an error (a worker's traceback tail ends with the cause)."""
    lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
    return (lines[0] if len(lines) == 1 else f"{lines[0][:80]} ... {lines[-1]}")[:300] if lines else type(exc).__name__


# --------------------------------------------------------------------------------- Markdown
def _fmt(v: dict[str, Any], digits: int = 0) -> str:
    f = f"{{:.{digits}f}}"
    return f"{f.format(v['median'])} ({f.format(v['min'])}–{f.format(v['max'])})"


def markdown_rows(summaries: list[dict[str, Any]]) -> str:
    head = ("| scorer | B | items | L | offered ev/s | sustained ev/s | worker ev/s | p50 ms | p95 ms | p99 ms | "
            "lost | dup | mean batch | worker CPU µs/ev | worker wall µs/ev redis / model / produce | "
            "box CPU µs/ev kafka / redis / generator | RSS MB | Redis B/user | load | notes |\n"
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")  # fmt: skip
    lines = []
    for sm in summaries:
        st = sm.get("stage_us_per_event") or {}
        stages = (f"{st.get('worker_cpu', 0):.0f} | {st.get('redis', 0):.0f} / {st.get('model', 0):.0f} / "
                  f"{st.get('produce', 0):.0f}") if st else "– | –"  # fmt: skip
        cu = sm.get("cpu_us_per_event") or {}
        box = (" / ".join(f"{cu[k]:.0f}" if cu.get(k) is not None else "–" for k in ("kafka", "redis", "generator"))
               if cu else "–")  # fmt: skip
        notes = list(sm.get("warnings", []))
        if sm.get("saturated"):
            notes.insert(0, "saturated")
        rate = sm.get("rate_label") or sm.get("offered_rate")
        load = ", ".join(f"{x:.1f}" for x in sm.get("load_avg", []))
        lines.append(
            f"| {sm.get('scorer', '')}{' at-least-once' if sm.get('processing_guarantee') == 'at_least_once' else ''} | "
            f"{sm.get('batch_size', '')} | {sm.get('catalog_items', ''):,} | "
            f"{sm.get('max_len', '')} | {rate} | {_fmt(sm['events_per_s'])} | "
            f"{sm.get('worker_events_per_s') or 0:.0f} | "
            f"{_fmt(sm['p50'], 1)} | {_fmt(sm['p95'], 1)} | {_fmt(sm['p99'], 1)} | "
            f"{sm['lost']} | {sm['duplicates']} | {sm.get('mean_batch', '–')} | {stages} | {box} | "
            f"{sm.get('worker_rss_mb', '–')} | {sm.get('redis_bytes_per_user') or 0:,.0f} | {load} | "
            f"{'; '.join(notes)} |"
        )
    return head + "\n".join(lines) + "\n"


METHOD_MD = """\
How it is measured (`attnrec bench`; `make bench` runs the full sweep):

- One worker (`attnrec worker` as a subprocess, B=256, W=5 ms unless stated), Kafka (KRaft, one broker) and Redis
  (AOF everysec) as local processes, and the load generator + recommendation tracker (one Python process, kafka-python)
  all on the same 2-core box. Models are random-weight AttnRec (2 blocks, d=64, 1 head, event types and time gaps)
  exported through the normal exporter path (parity gate, registry, load checks); speed does not depend on the weights.
- Events: users drawn uniformly from `--users` (2,000), items Zipf-like from the model's own vocabulary (so every
  event is scored; `fallback_recs` is 0). Every user's buffer is pre-filled to `buffer_len` (200) entries first: the
  steady state of an active user, where the model sees full `max_len` windows.
- Offered rate: paced (`--rate N`), or `max` = closed loop keeping at most `--max-inflight` events unanswered
  (so the figure is the worker's throughput and the latency at saturation stays bounded). A paced run that falls
  2 s behind stops offering and is marked *saturated*.
- Latency = produce time of an event -> arrival of the recommendation that covers it at a `recs` consumer.
  The worker emits one recommendation per user per batch (trigger = the user's last event in the batch); a rec
  with trigger = the user's k-th event covers all of that user's still-uncovered events up to k, and each is charged
  its own wait. A rec whose trigger was already seen is a duplicate. `lost` = events with neither a covering rec nor a
  dead letter when the drain ends (no progress for 15 s, or `--drain-timeout`); in a saturated run these are
  backlog the worker had not reached yet, not dropped messages.
- Sustained events/s = events covered in the measured window / (window opening -> last covering rec); `worker ev/s`
  is the worker's own count over the same window (`attnrec_events_total`). The first `--warmup` s are not measured.
- Per-stage worker time comes from the worker's own Prometheus histograms (diffed over the run); worker CPU and RSS
  from psutil; Redis bytes/user from `MEMORY USAGE` of the bench users' four keys.
- Baselines in the same sweep: B=1 (one Lua call, one ONNX run and one awaited produce per event) and a torch-eager
  scorer (`ATTNREC_SCORER=torch`: the exporter's `ServingGraph` in `torch.inference_mode` in place of the
  onnxruntime session; the rest of the worker is unchanged).
"""


def _key_table(key: dict[str, Any]) -> list[str]:
    m = key.get("machine", {})
    sums = [x for x in key.get("summaries", []) if "events_per_s" in x]
    out = [f"### Key figures, measured last ({key.get('started_at', '')} → {key.get('finished_at', '')} UTC)", "",
           f"Command: `{key.get('command', '')}`; {m.get('cores')} cores ({m.get('cpu_model')}). "
           f"Load generator alone: {key.get('generator_alone', {}).get('events_per_s', 0):,.0f} events/s.", "",
           markdown_rows(sums)]  # fmt: skip
    ratios = []
    by = {(x["scorer"], x["batch_size"], x.get("rate_label")): x for x in sums}
    for rate in ("max", "1000"):
        base = by.get(("onnx", 256, rate))
        for other in (("onnx", 1, rate), ("torch", 256, rate)):
            o = by.get(other)
            if base and o and o["events_per_s"]["median"] > 0:
                x = base["events_per_s"]["median"] / o["events_per_s"]["median"]
                ratios.append(f"at {rate}: ONNX B=256 / {other[0]} B={other[1]} = {x:.1f}x events/s")
    if ratios:
        out += ["Ratios (same run, same box): " + "; ".join(ratios) + ".", ""]
    return out


def _stage_rows(profiles: list[dict[str, Any]]) -> list[str]:
    lines = ["Where the time goes, per event, in process — the worker's own steps in its order against the real "
             "Redis",
             "and model, Kafka excluded (`stage_profile`). Each cell: CPU µs of this thread (robust to a busy box) / "
             "wall µs",
             "(includes waiting for Redis and for the CPU):", "",
             "| scorer | B | items | L | parse | redis (1 Lua call) | build inputs | model | recommend | JSON | "
             "store recs | send | stages (each enabled one) | total | load |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for sp in profiles:
        u, c = sp["us_per_event"], sp.get("cpu_us_per_event", {})
        cells = " | ".join(f"{c.get(k, 0):.0f} / {u.get(k, 0):.0f}" for k in ("parse", "redis", "inputs", "model",
                                                                             "recommend", "serialize", "store_recs", "send"))  # fmt: skip
        su, sc = sp.get("stage_us_per_event") or {}, sp.get("stage_cpu_us_per_event") or {}
        stages = ", ".join(f"{k} {sc.get(k, 0):.0f} / {su.get(k, 0):.0f}" for k in sp.get("stages") or []) or "none"
        lines.append(f"| {sp['scorer']} | {sp['batch_size']} | {sp['catalog_items']:,} | {sp['max_len']} | {cells} | "
                     f"{stages} | {c.get('total', 0):.0f} / {u['total']:.0f} | "
                     f"{sp['load_avg'][0] if sp['load_avg'] else ''} |")  # fmt: skip
    lines.append("")
    return lines


def benchmarks_section(rep: dict[str, Any], command: str, key: dict[str, Any] | None = None) -> str:
    """The body of docs/BENCHMARKS.md's :data:`SECTION` for a sweep report (``key``: a later sweep
    shown first as the key figures)."""
    m = rep.get("machine", {})
    g = rep.get("generator_alone", {})
    sums = [x for x in rep.get("summaries", []) if "events_per_s" in x]
    errs = [x for x in rep.get("summaries", []) if "error" in x]
    lines = [METHOD_MD]
    if key:
        lines += _key_table(key)
    lines += [
        f"### Sweep ({rep.get('started_at', '')} → {rep.get('finished_at', '')} UTC)",
        "",
        f"{m.get('cores')} cores ({m.get('cpu_model')}), {m.get('memory_gb')} GB. Command: "
        f"`{(rep.get('parts') or [{}])[0].get('command') or command}`. "
        "Raw data: `docs/bench/bench.json`; plot: `docs/bench/latency_vs_load.png`.",
        "",
        f"Load generator alone at the start: {g.get('events_per_s', 0):,.0f} events/s ({g.get('cpu_cores')} cores, "
        f"load {', '.join(str(x) for x in g.get('load_avg', []))}).",
        "",
    ]
    for part in rep.get("parts", [])[1:]:
        pg = part.get("generator_alone") or {}
        lines += [f"Plus `{part.get('command', '')}` ({part.get('started_at', '')} → {part.get('finished_at', '')}); "
                  f"generator alone then: {pg.get('events_per_s', 0):,.0f} events/s.", ""]  # fmt: skip
    lines += [
        "Each figure: median (min–max) of the repeats; notes flag a spread above 15%. `load` is the 1-minute load",
        "average after each repeat: the box is shared, so a load far above 2 means every figure of that row is "
        "contended.",
        "",
        markdown_rows(sums),
    ]
    if rep.get("stage_profiles"):
        lines += _stage_rows(rep["stage_profiles"])
    if errs:
        lines.append("Not measured end to end: " + "; ".join(
            f"{e['catalog_items']:,} items L={e['max_len']}: {short_error(Exception(e['error']))}" for e in errs) + ".")
    return "\n".join(lines)


def update_benchmarks_md(md: Path, body: str) -> None:
    """Replace (or append) :data:`SECTION` of docs/BENCHMARKS.md; other sections stay."""
    text = md.read_text() if md.exists() else "# Benchmarks\n"
    block = f"{SECTION}\n\n{body.rstrip()}\n"
    if SECTION in text:
        start = text.index(SECTION)
        nxt = text.find("\n## ", start + len(SECTION))
        text = text[:start] + block + ("\n" + text[nxt + 1 :] if nxt != -1 else "")
    else:
        text = text.rstrip() + "\n\n" + block
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(text)


# --------------------------------------------------------------------------------- plot
def plot(report: dict[str, Any], path: Path) -> Path | None:
    """Left: p50 (dashed) and p99 latency against offered load, one line per configuration.
    Right: the worker's throughput at ``--rate max`` per configuration (median, min-max bars)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib not installed: no plot")
        return None
    series: dict[str, list[dict[str, Any]]] = {}
    for sm in report.get("summaries", []):
        if "events_per_s" not in sm:
            continue
        name = f"{sm['scorer']} B={sm['batch_size']} {sm['catalog_items'] // 1000:,}k L={sm['max_len']}"
        series.setdefault(name, []).append(sm)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 6), gridspec_kw={"width_ratios": [3, 2]})
    for name, sms in series.items():
        sms = sorted(sms, key=lambda x: float(x.get("offered_rate") or 0))
        xs = [float(x.get("offered_rate") or 0) for x in sms]
        (line,) = ax.plot(xs, [x["p99"]["median"] for x in sms], marker="o", label=name)
        ax.plot(xs, [x["p50"]["median"] for x in sms], marker=".", linestyle="--", color=line.get_color())
        ax.fill_between(xs, [x["p99"]["min"] for x in sms], [x["p99"]["max"] for x in sms], color=line.get_color(),
                        alpha=0.12)  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered events/s (paced; for 'max' the rate the closed loop achieved)")
    ax.set_ylabel("produce → recommendation latency, ms (p99 solid, p50 dashed)")
    ax.axhline(50, color="grey", linewidth=0.8, linestyle=":")
    ax.axhline(10, color="grey", linewidth=0.8, linestyle=":")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    names, med, lo, hi = [], [], [], []
    for name, sms in series.items():
        top = [x for x in sms if x.get("rate_label") == "max"]
        if not top:
            continue
        runs = [r for r in report.get("runs", []) if r.get("label", "").rsplit(" #", 1)[0] == top[0].get("label")]
        vals = [v for v in (worker_eps(r) for r in runs) if v] or [top[0]["events_per_s"]["median"]]
        la = top[0].get("load_avg") or []
        names.append(f"{name}  (load {statistics.median(la):.0f})" if la else name)
        med.append(statistics.median(vals))
        lo.append(statistics.median(vals) - min(vals))
        hi.append(max(vals) - statistics.median(vals))
    bx.barh(range(len(names)), med, xerr=[lo, hi], color="tab:blue", alpha=0.7)
    bx.set_yticks(range(len(names)))
    bx.set_yticklabels(names, fontsize=8)
    bx.invert_yaxis()
    bx.set_xlabel("worker events/s at --rate max (median, min–max)")
    bx.grid(True, axis="x", alpha=0.3)
    m = report.get("machine", {})
    loads = [x for sm in report.get("summaries", []) for x in sm.get("load_avg", [])]
    load = f", load avg {min(loads):.0f}–{max(loads):.0f}" if loads else ""
    fig.suptitle(f"attnrec bench — one worker, Kafka + Redis + generator on {m.get('cores')} cores "
                 f"({m.get('cpu_model', '')}), {report.get('started_at', '')[:16]} UTC{load}", fontsize=10)  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
