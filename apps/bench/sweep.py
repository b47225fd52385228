"""The sweep of ``make bench``: the matrix of shapes, offered rates and baselines, and the stage
profiles, in one report.

The key shape (12,000 items, L=50, B=256) climbs the whole rate ladder; the baselines (B=1, and
the torch-eager scorer) and the other shapes (catalogue x ``max_len``) run a short ladder, which
is what fits the time: every point is several repeats of a run with warm-up and drain. The
in-process stage profiles come last: they need every shape's model and are the cheap part. A
shape that cannot run (e.g. out of memory) becomes an error row instead of ending the sweep, and
the report so far is written to ``bench.partial.json`` after every point.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError

from .load import bench_users, cleanup_users, generator_ceiling, prefill
from .models import ensure_model
from .report import machine_info, short_error
from .run import RunConfig, rate_label, run_repeated
from .settings import BenchSettings
from .stages import stage_profile
from .summary import summarise
from .worker import open_session

__all__ = ["SweepPlan", "run_sweep", "sweep_report"]

log = logging.getLogger(__name__)

#: The (scorer, B) steps of the key shape's stage profile.
STAGE_STEPS = (("onnx", 256), ("onnx", 1), ("torch", 256))


@dataclass
class SweepPlan:
    catalogs: tuple[int, ...] = (3_000, 12_000, 100_000, 1_000_000)
    lengths: tuple[int, ...] = (50, 200)
    ladder: tuple[float | None, ...] = (100, 300, 1000, 2000, 3000, None)  # None = max
    short_ladder: tuple[float | None, ...] = (1000, None)  # other shapes: what fits the time
    key: tuple[int, int] = (12_000, 50)
    repeats: int = 3
    duration_s: float = 8.0
    warmup_s: float = 2.0
    baselines: bool = True
    drain_timeout_s: float = 60.0
    stages: bool = True
    stages_only: bool = False
    key_runs: bool = True  # False: only the other shapes (e.g. to fill in what a sweep could not run)
    shapes: list[tuple[int, int]] = field(default_factory=list)

    def all_shapes(self) -> list[tuple[int, int]]:
        return self.shapes or [(c, L) for c in self.catalogs for L in self.lengths]


def run_sweep(base: BenchSettings, plan: SweepPlan, *, cache: Path, users: int, progress: bool,
              out_dir: Path, worker_src: Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Run ``plan`` against the stack of ``base``; the sweep report (see :func:`sweep_report`)."""
    machine = machine_info()
    started = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    gen = generator_ceiling(base, 5.0)
    log.info("generator alone: %.0f events/s (%.2f cores)", gen["events_per_s"], gen["cpu_cores"])
    groups: list[dict[str, Any]] = []

    def session_runs(n_items: int, L: int, scorer: str, B: int, ladder: Sequence[float | None]) -> None:
        reg, items = ensure_model(cache, n_items, L, positions=base.bench_positions)
        s = base.model_copy(update={"scorer": scorer, "batch_size": B})
        sess = open_session(s, registry=reg, items=items, n_users=users, log_dir=cache / "logs", catalog_items=n_items,
                            max_len=L, worker_src=worker_src)  # fmt: skip
        try:
            for rate in ladder:
                cfg = RunConfig(rate=rate, duration_s=plan.duration_s, warmup_s=plan.warmup_s,
                                drain_timeout_s=plan.drain_timeout_s,
                                label=f"{scorer} B={B} {n_items} L={L} @{rate_label(rate)}")  # fmt: skip
                runs = run_repeated(sess, cfg, plan.repeats, progress)
                sm = summarise(runs)
                sm["rate_label"] = rate_label(rate)
                sm["scorer"], sm["batch_size"], sm["catalog_items"], sm["max_len"] = scorer, B, n_items, L
                for w in sm["warnings"]:
                    log.warning("%s: %s", cfg.label, w)
                groups.append({"summary": sm, "runs": runs})
                _write_partial(out_dir, sweep_report(machine, gen, groups, started))
        finally:
            sess.close()

    key = plan.key
    if plan.stages_only:
        plan.key_runs = plan.baselines = False
    if plan.key_runs:
        session_runs(key[0], key[1], "onnx", 256, plan.ladder)
    if plan.baselines and plan.key_runs:
        session_runs(key[0], key[1], "onnx", 1, plan.short_ladder)
        session_runs(key[0], key[1], "torch", 256, plan.short_ladder)
    for n_items, L in plan.all_shapes():
        if (n_items, L) == key or plan.stages_only:
            continue
        try:
            session_runs(n_items, L, "onnx", 256, plan.short_ladder)
        except (AttnrecError, OSError, MemoryError) as exc:
            log.error("shape %d items, L=%d failed: %s", n_items, L, exc)
            groups.append({"summary": {"scorer": "onnx", "catalog_items": n_items, "max_len": L,
                                       "error": short_error(exc)}, "runs": []})  # fmt: skip
    stages = profile_stages(base, plan, cache=cache, users=users) if plan.stages else []
    rep = sweep_report(machine, gen, groups, started)
    rep["stage_profiles"] = stages
    return rep


def profile_stages(base: BenchSettings, plan: SweepPlan, *, cache: Path, users: int) -> list[dict[str, Any]]:
    """The in-process stage profiles: the key shape at each of :data:`STAGE_STEPS`, then every
    other shape at B=256 (how the cost grows with catalogue and length)."""
    key = plan.key
    out: list[dict[str, Any]] = []
    reg, items = ensure_model(cache, *key, positions=base.bench_positions)
    us = bench_users("bench-stages-", users)
    prefill(base, us, items, base.buffer_len)
    try:
        for scorer, B in STAGE_STEPS:
            sp = stage_profile(base, reg, items, us, batch_size=B, events=4096 if B > 1 else 512, scorer=scorer)
            sp.update({"catalog_items": key[0], "max_len": key[1]})
            log.info("stage profile %s B=%d: %s", scorer, B, sp["us_per_event"])
            out.append(sp)
        for n_items, L in plan.all_shapes():
            if (n_items, L) == key:
                continue
            try:
                reg, items = ensure_model(cache, n_items, L, positions=base.bench_positions)
                sp = stage_profile(base, reg, items, us, batch_size=256, events=2048, scorer="onnx")
            except (AttnrecError, OSError, MemoryError, AssertionError) as exc:
                log.error("stage profile of %d items, L=%d failed: %s", n_items, L, exc)
                continue
            sp.update({"catalog_items": n_items, "max_len": L})
            log.info("stage profile onnx %d items L=%d: %s", n_items, L, sp["us_per_event"])
            out.append(sp)
    finally:
        cleanup_users(base, "bench-stages-")
    return out


def sweep_report(machine: dict[str, Any], gen: dict[str, Any], groups: list[dict[str, Any]],
                 started: str) -> dict[str, Any]:  # fmt: skip
    """The sweep's report: its headline (DESIGN.md's bench ``--json`` fields, from the median run of
    the first batched ONNX group at max rate), the machine, the generator's ceiling, every summary
    and every run."""
    head = next((g for g in groups if g["summary"].get("rate_label") == "max" and g["summary"].get("scorer") == "onnx"
                 and g["summary"].get("batch_size") != 1), groups[0] if groups else None)  # fmt: skip
    rep: dict[str, Any] = {}
    if head and head["runs"]:
        sm = head["summary"]
        med_run = sorted(head["runs"], key=lambda r: r["events_per_s"])[len(head["runs"]) // 2]
        rep.update({k: med_run[k] for k in ("events", "duration_s", "events_per_s", "offered_rate", "latency_ms",
                                            "catalog_items", "max_len", "workers")})  # fmt: skip
        rep["lost"] = sm["lost"]
        rep["duplicates"] = sm["duplicates"]
    rep.update({"kind": "sweep", "started_at": started,
                "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "machine": machine, "generator_alone": gen,
                "summaries": [g["summary"] for g in groups],
                "runs": [r for g in groups for r in g["runs"]]})  # fmt: skip
    return rep


def _write_partial(out_dir: Path, rep: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.partial.json").write_text(json.dumps(rep, indent=1))
