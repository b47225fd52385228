"""Item content, measured: the same synthetic content-driven events (``training/sim/content.py``)
trained without and with the attribute file, under the published protocol (leave-one-out, full
ranking, input items excluded), reported overall and on the cases whose target is a cold item (one
no training event names) and those whose target is warm, on both splits (``--cold-target val``
puts the cold targets on the validation split, to choose a setting there).

    python -m attnrec.training.content_eval --users 2000 --items 480 --events 80000 --seed 7 --threads 1 \\
        --json runs/content.json

Writes the events (``events.jsonl``) and the attribute file (``items.csv``) beside the JSON, so
``attnrec train --data DIR/events.jsonl --items DIR/items.csv`` reproduces the "with" run.

``--scenario live``: the live-commerce simulator's clicks (``training/sim/live.py``) with the
attributes its world knows (category: the room's; brand: the streamer, i.e. the room; title:
the kind of item and its category). That world has no item without events, so there is no cold
item to measure: only overall figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure", "split_metrics", "live_attributes", "main"]

log = logging.getLogger(__name__)


def split_metrics(ds: Any, ranks: list[int], cold: set[str], split: str = "test") -> dict[str, Any]:
    """HR/NDCG@10,20 of one split's ranks: all cases, cold-target cases, warm-target cases."""
    from .evaluate import rank_metrics

    targets = [ds.vocab.item_id(ds.users[u].items[cut]) for u, cut in ds.split(split)]
    is_cold = np.array([t in cold for t in targets], dtype=bool)
    r = np.asarray(ranks)
    return {"all": {**rank_metrics(r), "cases": int(len(r))},
            "cold": {**rank_metrics(r[is_cold]), "cases": int(is_cold.sum())},
            "warm": {**rank_metrics(r[~is_cold]), "cases": int((~is_cold).sum())}}


def live_attributes(world: Any) -> Any:
    """The attribute table of a :class:`attnrec.training.sim.world.LiveWorld`: rooms, products and videos."""
    from .content import ContentTable, ItemAttributes
    from .sim.world import CATEGORIES

    rows = []
    for r, room in enumerate(world.rooms):
        cat = CATEGORIES[world.room_cat[r]]
        rows.append(ItemAttributes(room, cat, room, 0, f"live room {cat}"))
        rows += [ItemAttributes(p, cat, room, 0, f"product {cat}") for p in world.room_products[r]]
    for v, r in zip(world.videos, world.video_room, strict=True):
        cat = CATEGORIES[world.room_cat[r]]
        rows.append(ItemAttributes(v, cat, world.rooms[r], 0, f"video {cat}"))
    return ContentTable({row.item_id: row for row in rows})


def _write_table_csv(path: Path, table: Any) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category", "brand", "price_bucket", "title"])
        for r in table.rows.values():
            w.writerow([r.item_id, r.category, r.brand, "", r.title])


def measure(out: Path, *, users: int, items: int, events: int, seed: int, threads: int = 1,
            epochs: int = 200, max_minutes: float = 30.0, scenario: str = "content",
            variants: tuple[str, ...] = ("without", "with"), id_dropout: float | None = None,
            cold_target: str = "test") -> dict[str, Any]:
    """Generate, train without and with content, evaluate both splits; returns the report.
    ``cold_target`` "val" puts the cold targets on the validation split (to choose a setting
    there) instead of the test split."""
    import torch

    from .content import attach_content, load_item_attributes
    from .data import load_dataset
    from .defaults import default_configs
    from .sim.content import generate_content, write_attributes_csv
    from .train import fit_and_evaluate

    torch.set_num_threads(threads)
    out.mkdir(parents=True, exist_ok=True)
    if scenario == "live":
        from attnrec.events import ClickEvent

        from .sim.live import generate_live
        from .sim.world import LiveWorld

        lw = LiveWorld(seed, n_users=users, n_rooms=40)
        evs = [e for e in generate_live(events, seed=seed, world=lw) if isinstance(e, ClickEvent)]
        cold: set[str] = set()
        _write_table_csv(out / "items.csv", live_attributes(lw))
    else:
        evs, world, cold = generate_content(users, items, events, seed, cold_target=cold_target)
        write_attributes_csv(out / "items.csv", world)
    with open(out / "events.jsonl", "wb") as f:
        for ev in evs:
            f.write(ev.to_json() + b"\n")
    report: dict[str, Any] = {"data": {"scenario": scenario, "users": users, "items": items, "events": len(evs), "seed": seed,
                                       "cold_items": len(cold), "cold_target": cold_target}, "runs": {}}
    for variant in variants:
        ds = load_dataset(out / "events.jsonl", "events")
        if variant == "with":
            attach_content(ds, load_item_attributes(out / "items.csv"))
        mcfg, tcfg = default_configs(ds)
        if variant == "with" and id_dropout is not None:
            mcfg.id_dropout = id_dropout
        tcfg.threads, tcfg.epochs, tcfg.max_minutes = threads, epochs, max_minutes
        t0 = time.monotonic()
        _, metrics = fit_and_evaluate(ds, mcfg, tcfg)
        # fit_and_evaluate has ranked both splits already (per-user ranks in case order)
        by_split = {split: split_metrics(ds, metrics["per_user"][split]["ranks"], cold, split) for split in ("val", "test")}
        report["runs"][variant] = {**by_split, "best_epoch": metrics["best_epoch"],
                                   "train_seconds": metrics["train_seconds"], "catalogue": len(ds.vocab.items),
                                   "wall_seconds": round(time.monotonic() - t0, 1),
                                   "val_ndcg@10": metrics["val"]["ndcg@10"], "model": mcfg.to_dict()}
        log.info("%s content: %s", variant, json.dumps(by_split))
    return report


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=2000)
    p.add_argument("--items", type=int, default=480)
    p.add_argument("--events", type=int, default=80_000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--max-minutes", type=float, default=30.0)
    p.add_argument("--scenario", choices=["content", "live"], default="content")
    p.add_argument("--variants", default="without,with", help="which runs: without, with (comma-separated)")
    p.add_argument("--id-dropout", type=float, default=None, help="the 'with' run's id-dropout (default: training's)")
    p.add_argument("--cold-target", choices=["test", "val"], default="test",
                   help="which split's targets are the cold items (val: to choose a setting on validation)")
    p.add_argument("--json", type=Path, required=True, help="report file; the data goes beside it")
    a = p.parse_args(argv)
    report = measure(a.json.parent / (a.json.stem + "-data"), users=a.users, items=a.items, events=a.events,
                     seed=a.seed, threads=a.threads, epochs=a.epochs, max_minutes=a.max_minutes,
                     scenario=a.scenario, variants=tuple(a.variants.split(",")), id_dropout=a.id_dropout,
                     cold_target=a.cold_target)
    text = json.dumps(report, indent=1)
    a.json.write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
