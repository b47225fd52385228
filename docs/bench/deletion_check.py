"""Deletion check of the explanation on real data (docs/BENCHMARKS.md, Explanations): removing
the top-explained event from a user's input must lower the score of the top-1 recommendation
more than removing a random event (``attnrec.training.attention.deletion_check``).

    # a checkpoint and the data it was trained on (any format attnrec train reads)
    python docs/bench/deletion_check.py check --model CKPT --data ../shared/data/amazon-beauty/Beauty.txt --format s3 --json FILE
    # the YOOCHOOSE sample (session-rec TSV: SessionId, ItemId, Time) as our JSONL events, one
    # session a user, to train on with attnrec train --format events
    python docs/bench/deletion_check.py yoochoose ../shared/data/yoochoose-100k/yoochoose-clicks-100k_train_full.txt OUT.jsonl

The YOOCHOOSE reader here is a minimal one for this check only (clicks, a session as the user).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import orjson


def yoochoose_to_events(src: Path, out: Path) -> int:
    """session-rec's YOOCHOOSE TSV (header ``SessionId ItemId Time``, unix seconds) -> our JSONL
    click events (user = session, ts in ms); returns the number of events."""
    n = 0
    with open(src, newline="") as f, open(out, "wb") as w:
        reader = csv.DictReader(f, delimiter="\t")
        for row in reader:
            ev = {"event_id": f"yc-{n}", "user_id": f"s{row['SessionId']}", "item_id": row["ItemId"],
                  "event_type": "click", "ts": int(round(float(row["Time"]) * 1000))}
            w.write(orjson.dumps(ev) + b"\n")
            n += 1
    return n


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--model", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--format", required=True)
    c.add_argument("--split", default="test")
    c.add_argument("--max-cases", type=int, default=0)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--threads", type=int, default=1)
    c.add_argument("--past-only", action="store_true",
                   help="leave the newest event (the trigger) out of the explained and the random pick")
    c.add_argument("--json", default="-")
    y = sub.add_parser("yoochoose")
    y.add_argument("src")
    y.add_argument("out")
    a = p.parse_args()
    if a.cmd == "yoochoose":
        print(yoochoose_to_events(Path(a.src), Path(a.out)), "events")
        return 0
    import torch
    from attnrec.training.attention import deletion_check
    from attnrec.training.checkpoint import load_checkpoint
    from attnrec.training.data import Vocab, load_dataset

    torch.set_num_threads(a.threads)
    model, config, vocab = load_checkpoint(a.model)
    ds = load_dataset(a.data, a.format, Vocab.from_dict(vocab))
    res = {"model": a.model, "dataset": ds.name, "explanation": model.cfg.explain,
           **deletion_check(model, ds, a.split, max_cases=a.max_cases, seed=a.seed, past_only=a.past_only)}
    text = json.dumps(res, indent=1)
    if a.json != "-":
        Path(a.json).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
