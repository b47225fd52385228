"""``attnrec prequential``: every method on a log's next events, with retraining in the loop
(training/prequential.py), its figures with intervals (training/prequential_report.py).

    attnrec prequential --data ../shared/data/yoochoose-100k --format yoochoose \\
        --start 2014-04-05 --every 1d --test-from 2014-04-07 --json out.json --plot out.png

The settings (:class:`~attnrec.training.settings.PrequentialSettings`) are ``attnrec train``'s (the
data, its format and mapping, the training options that apply: threads, seed) plus ``PREQ_*``.
Torch is imported when it runs.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from attnrec.errors import ConfigError
from attnrec.units import parse_duration

from .settings import PrequentialSettings, TrainingSettings, log_spec

__all__ = ["PrequentialSettings", "cmd_prequential", "parse_when", "run"]

log = logging.getLogger(__name__)


def parse_when(text: str, first_ms: int) -> int:
    """Epoch ms of ``text``: an ISO 8601 time, or a duration after ``first_ms``."""
    try:
        return first_ms + int(parse_duration(text) * 1000)
    except ValueError:
        pass
    try:
        t = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{text!r}: expected an ISO 8601 time (2014-04-05T00:00) or a duration after the log's "
                          "first event (4d)") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=dt.UTC)
    return int(t.timestamp() * 1000)


def _events(s: TrainingSettings) -> list[Any]:
    from .eventfiles import read_events
    from .logs import read_log

    if s.data is None:
        raise ConfigError("--data is required (or set ATTNREC_DATA)")
    if s.data_format in ("s3", "gsasrec"):
        raise ConfigError(f"format {s.data_format} has no times: the prequential evaluation needs an event log")
    if s.data_format == "events":
        return read_events(s.data)
    return list(read_log(s.data, log_spec(s.data_format, s.data_columns, s.data_types, s.data_time_unit)))


def _weights(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        k, _, v = part.partition("=")
        try:
            out[k.strip()] = float(v)
        except ValueError:
            raise ConfigError(f"ATTNREC_PREQ_TRENDING_WEIGHTS: {part!r} is not TYPE=NUMBER") from None
    return out


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def run(s: PrequentialSettings, events: list[Any] | None = None, neural: Any = None) -> dict[str, Any]:
    """The whole run: the result JSON (also written to ``PREQ_JSON``, drawn to ``PREQ_PLOT``).
    ``neural(name)``: builds the trained methods (default: gru4rec, attention-frozen, attention)."""
    import torch

    from .prequential import METHODS, POLICIES, Stream, prequential
    from .prequential_models import Neural
    from .prequential_report import markdown_table, per_period, period_of, plot, summarise
    from .sknn import VMIS, VSKNN

    t0, c0 = time.monotonic(), resource.getrusage(resource.RUSAGE_SELF)
    methods = [m.strip() for m in s.preq_methods.split(",") if m.strip()]
    bad = [m for m in methods if m not in METHODS and neural is None]
    if bad:
        raise ConfigError(f"ATTNREC_PREQ_METHODS: unknown {', '.join(bad)}; use {', '.join(METHODS)}")
    if s.preq_start is None:
        raise ConfigError("--start is required (or set ATTNREC_PREQ_START): where evaluation starts")
    torch.set_num_threads(s.train_threads)
    events = events if events is not None else _events(s)
    stream = Stream.of(events)
    first = int(stream.ts[0])
    start = parse_when(s.preq_start, first)
    every = int(parse_duration(s.preq_every) * 1000)
    end = parse_when(s.preq_end, first) if s.preq_end else None
    test_from = parse_when(s.preq_test_from, first) if s.preq_test_from else None

    memo: dict[Any, Any] = {}  # attention-frozen's fit is attention's first

    def default_neural(name: str) -> Any:
        kw = {"epochs": s.preq_epochs, "threads": s.train_threads, "min_item_support": s.data_min_item_support,
              "seed": s.train_seed, "margin": s.preq_margin, "memo": memo, "holdout": s.preq_holdout}
        if name == "gru4rec":
            return Neural(name, "gru4rec", **kw)
        if name == "attention-frozen":
            return Neural(name, refit=False, **kw)
        return Neural(name, gated=True, **kw)

    import dataclasses

    knn = {"vsknn": dataclasses.replace(VSKNN, k=s.preq_knn_k, sample=s.preq_knn_sample),
           "vmis": dataclasses.replace(VMIS, k=s.preq_knn_k, sample=s.preq_knn_sample)}
    res = prequential(events, start, every, methods, end_ms=end, exclude_window=s.preq_exclude_window,
                      trending_window_ms=int(s.preq_trending_window_s * 1000), trending_weights=_weights(s.preq_trending_weights),
                      knn=knn, neural=neural or default_neural, stream=stream)
    next_ts = stream.ts[res.pairs.next]
    span_days = (int(next_ts.max()) - int(next_ts.min())) / 86_400_000 if len(next_ts) else 0
    unit = s.preq_per if s.preq_per != "auto" else ("day" if span_days > 2 else "hour")
    splits = {"all": np.ones(len(res.pairs), dtype=bool)} if test_from is None else \
        {"validation": next_ts < test_from, "test": next_ts >= test_from}
    reference = s.preq_reference if s.preq_reference in res.ranks else None
    out: dict[str, Any] = {
        "log": str(s.data), "format": s.data_format, "command": " ".join(["attnrec", *sys.argv[1:]]) if sys.argv else "",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
        "events": len(stream.events), "users": len(stream.users), "items": len(stream.items),
        "start": dt.datetime.fromtimestamp(start / 1000, dt.UTC).isoformat(), "every_s": every / 1000,
        "test_from": dt.datetime.fromtimestamp(test_from / 1000, dt.UTC).isoformat() if test_from else None,
        "pairs": len(res.pairs), "methods": methods, "policies": list(POLICIES), "reference": reference,
        "settings": {"exclude_window": s.preq_exclude_window, "trending_window_s": s.preq_trending_window_s,
                     "trending_weights": _weights(s.preq_trending_weights), "knn_k": s.preq_knn_k,
                     "knn_sample": s.preq_knn_sample, "epochs": s.preq_epochs, "margin": s.preq_margin,
                     "min_item_support": s.data_min_item_support, "holdout": s.preq_holdout, "threads": s.train_threads,
                     "seed": s.train_seed},
        "repeats": round(float(np.mean([int(res.pairs.target[i]) in set(stream.item[stream.history(int(e), 10**9)].tolist())
                                        for i, e in enumerate(res.pairs.prev.tolist())])) if len(res.pairs) else 0.0, 4),
        "fallback_share": {m: round(1 - float(v.mean()), 4) for m, v in res.sources.items()},
        "periods": res.periods, "figures": {}, "per_period": {},
    }
    for p in POLICIES:
        out["figures"][p] = {}
        for split, sel in splits.items():
            ranks = {m: r[p][sel] for m, r in res.ranks.items()}
            out["figures"][p][split] = summarise(ranks, res.pairs.user[sel], reference=reference,
                                                 resamples=s.preq_resamples, seed=s.train_seed)
        out["per_period"][p] = per_period({m: r[p] for m, r in res.ranks.items()}, period_of(next_ts, unit))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime - c0.ru_utime - c0.ru_stime, 1)
    out["wall_seconds"] = round(time.monotonic() - t0, 1)
    out["tables"] = {p: {split: markdown_table(out["figures"][p][split], reference) for split in splits} for p in POLICIES}
    if s.preq_json is not None:
        s.preq_json.parent.mkdir(parents=True, exist_ok=True)
        s.preq_json.write_text(json.dumps(out, indent=1) + "\n")
    if s.preq_plot is not None:
        plot(out, s.preq_plot, f"{Path(str(s.data)).name}: prequential, retrained every {s.preq_every}", "excluded")
        plot(out, s.preq_plot.with_name(s.preq_plot.stem + "-allowed" + s.preq_plot.suffix),
             f"{Path(str(s.data)).name}: prequential, repeats allowed", "allowed")
    return out


def cmd_prequential(s: PrequentialSettings, args: Any) -> int:
    """``attnrec prequential``: the tables on stdout (markdown), the figures in ``PREQ_JSON``."""
    out = run(s)
    for p, by_split in out["tables"].items():
        for split, table in by_split.items():
            sys.stdout.write(f"\n### {p}, {split} ({out['figures'][p][split]['pairs']} pairs)\n\n{table}\n")
    sys.stdout.write(f"\ncpu {out['cpu_seconds']} s, wall {out['wall_seconds']} s\n")
    return 0
