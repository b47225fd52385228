"""Noise robustness: test NDCG@10 / HR@10 of the attention model and the non-attention baselines
when a share P of random catalogue items is inserted into every user's history (training and
validation/test input; targets untouched: training/noise.py), and where the attention model's
last layer looks: its attention mass on injected events against their share of the window.

Every run is one ``attnrec eval`` (``--train`` for the attention model, ``--baseline gru4rec``
/ ``meanpool``), one torch thread, the same seed and per-run training budget; ``--parallel``
runs that many at once (one per core). Run JSONs go to ``--runs`` (an existing one is reused
unless ``--force``); then a summary JSON, a plot and a markdown table (printed).

    python docs/bench/noise_robustness.py --data ../shared/data/amazon-beauty/Beauty.txt --format s3 \\
        --budget 5 --parallel 2 --runs runs/noise --json docs/bench/noise_robustness.json \\
        --png docs/img/noise_robustness.png --flags 'gru4rec:--lr 2e-3'
    python docs/bench/noise_robustness.py --synthetic 1000,500,60000,7 --budget 20 --extra "--epochs 40" \\
        --parallel 2 --flags 'gru4rec:--lr 2e-3' --runs runs/noise-synth ...      # docs/BENCHMARKS.md's run
    python docs/bench/noise_robustness.py --runs runs/noise --render-only ...   # re-aggregate only
    python docs/bench/noise_robustness.py --overlay plain=A.json --overlay denoise=B.json --png OUT.png  # compare grids
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

log = logging.getLogger("noise_robustness")

MODELS = ("attention", "gru4rec", "meanpool")
LEVELS = (0.0, 0.1, 0.2, 0.3)
REPO = Path(__file__).resolve().parents[2]


def run_file(runs: Path, model: str, p: float) -> Path:
    return runs / f"{model}.p{p:g}.json"


def command(a: argparse.Namespace, model: str, p: float, out: Path) -> list[str]:
    which = ["--train"] if model == "attention" else ["--baseline", model]
    return [a.attnrec, "eval", *which, "--noise", f"{p:g}", "--data", a.data, "--format", a.format,
            "--threads", "1", "--seed", str(a.seed), "--max-minutes", f"{a.budget:g}", "--quiet",
            "--json", str(out), *shlex.split(a.extra), *shlex.split(dict(a.flags).get(model, ""))]


def shown(cmd: list[str]) -> list[str]:
    """``cmd`` as recorded: paths inside the repository relative to it (the runs start there)."""
    root = str(REPO) + os.sep
    return [x[len(root):] if x.startswith(root) else x for x in cmd]


def run_one(a: argparse.Namespace, model: str, p: float) -> None:
    out = run_file(Path(a.runs), model, p)
    if out.exists() and not a.force:
        log.info("reusing %s", out)
        return
    cmd = command(a, model, p, out)
    log.info("+ %s", shlex.join(cmd))
    t0 = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    load0 = os.getloadavg()[0]
    with open(out.with_suffix(".log"), "w") as err:
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
    res = json.loads(out.read_text())
    res["run"] = {"started": t0, "ended": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  "load1_start": round(load0, 2), "load1_end": round(os.getloadavg()[0], 2), "command": shlex.join(shown(cmd))}
    out.write_text(json.dumps(res, indent=1) + "\n")


def summarise(runs: Path, models: tuple[str, ...], levels: tuple[float, ...]) -> dict[str, Any]:
    rows = []
    for model in models:
        base = None
        for p in levels:
            f = run_file(runs, model, p)
            if not f.exists():
                continue
            r = json.loads(f.read_text())
            m = r["metrics"]
            if p == 0:
                base = m
            att = (r.get("noise") or {}).get("attention")
            rows.append({
                "model": model, "p": p, "ndcg@10": m["ndcg@10"], "hr@10": m["hr@10"],
                "ndcg_drop": (m["ndcg@10"] / base["ndcg@10"] - 1) if base and base["ndcg@10"] else None,
                "hr_drop": (m["hr@10"] / base["hr@10"] - 1) if base and base["hr@10"] else None,
                "train_cpu_seconds": r.get("train_cpu_seconds"), "best_epoch": r["config"].get("best_epoch"),
                "epochs_run": r["config"].get("epochs_run"), "stop_reason": r["config"].get("stop_reason"),
                "val_ndcg@10": r["config"].get("val", {}).get("ndcg@10"),
                "attention_mass": att["mass_on_injected"] if att else None,
                "injected_share_of_window": att["share_of_window"] if att else None,
                "dataset": r["dataset"], "users": r["users"], "run": r.get("run"),
            })
    return {"protocol": "loo-full-ranking", "split": "test", "models": list(models), "levels": list(levels),
            "rows": rows}


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:+.1f} %"


def markdown(summary: dict[str, Any]) -> str:
    lines = ["| model | P | test NDCG@10 | HR@10 | NDCG@10 vs P=0 | HR@10 vs P=0 | best / run epochs | train CPU-s "
             "| attention on injected / their share of the window |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in summary["rows"]:
        att = ("–" if r["attention_mass"] is None or r["p"] == 0
               else f"{r['attention_mass']:.3f} / {r['injected_share_of_window']:.3f}")
        lines.append(f"| {r['model']} | {r['p']:g} | {r['ndcg@10']:.4f} | {r['hr@10']:.4f} | {_pct(r['ndcg_drop'])} "
                     f"| {_pct(r['hr_drop'])} | {r['best_epoch']} / {r['epochs_run']} | {r['train_cpu_seconds']:.0f} | {att} |")
    return "\n".join(lines)


def plot(summary: dict[str, Any], png: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(14, 4))
    for model in summary["models"]:
        rs = [r for r in summary["rows"] if r["model"] == model]
        if not rs:
            continue
        ps = [r["p"] for r in rs]
        ax1.plot(ps, [r["ndcg@10"] for r in rs], marker="o", label=model)
        ax2.plot(ps, [100 * (r["ndcg_drop"] or 0) for r in rs], marker="o", label=model)
        if model == "attention":
            ax3.plot(ps, [r["attention_mass"] or 0 for r in rs], marker="o", label="attention mass on injected")
            ax3.plot(ps, [r["injected_share_of_window"] or 0 for r in rs], marker="s", linestyle="--",
                     label="injected share of the window")
    ax3.set(ylabel="share", title="attention model, last layer, final position")
    _finish(fig, (ax1, ax2, ax3), png, title, legend_size=8)


def _finish(fig: Any, axes: tuple[Any, ...], png: Path, title: str, legend_size: int) -> None:
    """Common labels of the three panels (NDCG@10, its change, attention), grid, legends; save."""
    axes[0].set(xlabel="noise share P", ylabel="test NDCG@10", title="test NDCG@10")
    axes[1].set(xlabel="noise share P", ylabel="% vs P=0", title="NDCG@10 relative to P=0")
    axes[2].set(xlabel="noise share P")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=legend_size)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


def overlay(series: list[tuple[str, Path]], png: Path, title: str) -> None:
    """One figure over several grids' summary JSONs (``--overlay LABEL=FILE``): each model of each
    grid is a line labelled ``LABEL: model``; the attention panel shows each attention grid's
    mass on injected events over their share of the window (1 = uniform)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.5))
    n = 0
    for label, path in series:
        summary = json.loads(path.read_text())
        for model in summary["models"]:
            rs = [r for r in summary["rows"] if r["model"] == model]
            ps = [r["p"] for r in rs]
            style = {"marker": "o", "label": f"{label}: {model}", "color": f"C{n % 10}"}  # one colour per line, all panels
            n += 1
            ax1.plot(ps, [r["ndcg@10"] for r in rs], **style)
            ax2.plot(ps, [100 * (r["ndcg_drop"] or 0) for r in rs], **style)
            noisy = [r for r in rs if r["p"] > 0 and r["attention_mass"] is not None]
            if noisy:
                ax3.plot([r["p"] for r in noisy], [r["attention_mass"] / r["injected_share_of_window"] for r in noisy],
                         **style)
    ax3.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="uniform")
    ax3.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="half the share")
    ax3.set(ylabel="mass / share", title="attention on injected / their share of the window", ylim=(0, 1.1))
    _finish(fig, (ax1, ax2, ax3), png, title, legend_size=7)


def synthetic_events(runs: Path, spec: str) -> str:
    """Write the synthetic click events of ``USERS,ITEMS,EVENTS,SEED`` (once) and return the file."""
    users, items, events, seed = (int(x) for x in spec.split(","))
    path = runs / f"synth-u{users}-i{items}-e{events}-s{seed}.jsonl"
    if not path.exists():
        sys.path.insert(0, str(REPO))
        from attnrec.training.sim.synth import generate

        path.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(users, items, events, seed=seed)))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data/amazon-beauty/Beauty.txt")
    p.add_argument("--format", default="s3")
    p.add_argument("--synthetic", metavar="USERS,ITEMS,EVENTS,SEED",
                   help="instead of --data: write training/sim/synth.py's events (e.g. 1000,500,60000,7) to --runs and use them")
    p.add_argument("--budget", type=float, default=5.0, help="training minutes per run (attnrec eval --max-minutes)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--levels", default=",".join(f"{x:g}" for x in LEVELS), help="noise shares P, comma-separated")
    p.add_argument("--models", default=",".join(MODELS), help="attention, gru4rec, meanpool (comma-separated)")
    p.add_argument("--parallel", type=int, default=2, help="runs at once (one torch thread each)")
    p.add_argument("--extra", default="", help="more attnrec eval flags for every run, e.g. '--patience 4'")
    p.add_argument("--flags", action="append", default=[], type=lambda x: tuple(x.split(":", 1)), metavar="MODEL:FLAGS",
                   help="more flags for one model's runs, e.g. 'gru4rec:--lr 2e-3' (repeatable)")
    p.add_argument("--attnrec", default=str(REPO / ".venv/bin/attnrec"))
    p.add_argument("--runs", default="runs/noise", help="directory of the per-run JSONs")
    p.add_argument("--force", action="store_true", help="rerun runs whose JSON exists")
    p.add_argument("--render-only", action="store_true", help="only aggregate the existing run JSONs")
    p.add_argument("--json", default="docs/bench/noise_robustness.json")
    p.add_argument("--png", default="docs/img/noise_robustness.png")
    p.add_argument("--overlay", action="append", default=[], type=lambda x: tuple(x.split("=", 1)), metavar="LABEL=JSON",
                   help="only plot these grids' summary JSONs on one figure (--png) and stop")
    p.add_argument("--title", default="", help="the --overlay figure's title")
    a = p.parse_args(argv)
    if a.overlay:
        overlay([(label, Path(f)) for label, f in a.overlay], Path(a.png), a.title)
        return 0
    models = tuple(m.strip() for m in a.models.split(",") if m.strip())
    levels = tuple(float(x) for x in a.levels.split(","))
    bad = [m for m in models if m not in MODELS]
    if bad:
        p.error(f"unknown model(s) {bad}; use {MODELS}")
    a.data, a.runs = str(Path(a.data).resolve()), str(Path(a.runs).resolve())  # the runs start in the repo
    Path(a.runs).mkdir(parents=True, exist_ok=True)
    if a.synthetic:
        a.data, a.format = synthetic_events(Path(a.runs), a.synthetic), "events"
    if not a.render_only:
        # level by level, so a grid cut short still compares every model at the levels it reached
        jobs = [(m, lvl) for lvl in levels for m in models]
        with ThreadPoolExecutor(max_workers=max(1, a.parallel)) as pool:
            for f in [pool.submit(run_one, a, m, lvl) for m, lvl in jobs]:
                f.result()
    summary = summarise(Path(a.runs), models, levels)
    summary.update({"data": a.data, "format": a.format, "budget_minutes": a.budget, "seed": a.seed,
                    "threads_per_run": 1, "parallel": a.parallel, "extra": a.extra, "flags": dict(a.flags)})
    Path(a.json).parent.mkdir(parents=True, exist_ok=True)
    Path(a.json).write_text(json.dumps(summary, indent=1) + "\n")
    name = summary["rows"][0]["dataset"].split("+")[0] if summary["rows"] else a.data
    budget = f"{a.budget:g}-min budget" + (f", {a.extra}" if a.extra else "")
    plot(summary, Path(a.png), f"{name}: random items inserted (share P); per run: {budget}, seed {a.seed}, 1 thread")
    sys.stdout.write(markdown(summary) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
