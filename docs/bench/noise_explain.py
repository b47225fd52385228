"""Where the explanation looks on noisy clicks, for each way of reading it (docs/BENCHMARKS.md,
Defaults [D2]): the attention model trained on events with a share P of random items inserted
(``attnrec eval --train --noise P``; the same training for the same arguments), then its
attention on the inserted events against their share of the window, on the validation and the
test cases, averaged over blocks (what ``because`` serves) and the last block's alone.

    python docs/bench/noise_explain.py --data EVENTS.jsonl --noise 0.2 --denoise 0.15 --epochs 40 --json FILE

The events: ``docs/bench/noise_robustness.py --synthetic 1000,500,60000,7`` writes them.
"""

from __future__ import annotations

import argparse
import json
import sys


def measure(data: str, fmt: str, noise: float, denoise: float, epochs: int, seed: int, threads: int) -> dict:
    import torch
    from attnrec.training.attention import noise_attention
    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import default_configs
    from attnrec.training.noise import inject_noise
    from attnrec.training.train import fit_and_evaluate

    torch.set_num_threads(threads)
    ds, info = inject_noise(load_dataset(data, fmt), noise, seed)
    mcfg, tcfg = default_configs(ds)
    tcfg.denoise, tcfg.epochs, tcfg.seed, tcfg.threads, tcfg.max_minutes = denoise, epochs, seed, threads, 0.0
    model, metrics = fit_and_evaluate(ds, mcfg, tcfg)
    out = {"noise": noise, "denoise": denoise, "epochs": epochs, "seed": seed, "best_epoch": metrics["best_epoch"],
           "train_cpu_seconds": metrics["train_cpu_seconds"],
           "val_ndcg@10": metrics["val"]["ndcg@10"], "test_ndcg@10": metrics["test"]["ndcg@10"], "attention": {}}
    for explain in ("all-blocks", "last-block"):
        model.cfg.explain = explain
        out["attention"][explain] = {split: noise_attention(model, ds, info, split) for split in ("val", "test")}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--format", default="events")
    p.add_argument("--noise", type=float, default=0.2, help="share of inserted random events (P)")
    p.add_argument("--denoise", type=float, required=True, help="the training's --denoise")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", default="-")
    a = p.parse_args()
    text = json.dumps(measure(a.data, a.format, a.noise, a.denoise, a.epochs, a.seed, a.threads), indent=1)
    if a.json != "-":
        with open(a.json, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
