"""Seconds per training step (forward + backward + Adam) for the loss / width choices in
docs/BENCHMARKS.md (Quality, "Training step cost", measured 2026-11-28): random batches of 128
rows of the data's training arrays, 2 warm-up steps, median of the rest.

    python docs/bench/train_step_cost.py --data ../shared/data/ml1m-gsasrec --format gsasrec --threads 1
    python docs/bench/train_step_cost.py --data ../shared/data/amazon-beauty/Beauty.txt --format s3 \
        --recipes ce:64 ce:128 ce-ls:128 ce:256 sampled-row:256 sampled-position:256 sampled-batch4096:256
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch
from attnrec.training.data import load_dataset
from attnrec.training.defaults import default_configs
from attnrec.training.model import AttnRec, ModelConfig
from attnrec.training.train import TrainConfig, _loss, batch_tensors, training_arrays


def step_seconds(arrays: list[torch.Tensor], mcfg: ModelConfig, tcfg: TrainConfig, steps: int) -> float:
    model = AttnRec(mcfg)
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr)
    gen = torch.Generator().manual_seed(0)
    n = arrays[0].shape[0]
    times = []
    for _ in range(steps + 2):
        batch = batch_tensors(arrays, torch.randint(0, n, (tcfg.batch_size,), generator=gen))
        t0 = time.perf_counter()
        loss = _loss(model, tcfg, *batch, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True)
    p.add_argument("--format", required=True, choices=("s3", "gsasrec", "events"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--steps", type=int, default=8)
    p.add_argument("--recipes", nargs="+", default=["ce:64", "sampled-row:64", "ce:128"],
                   help="LOSS:D with LOSS one of ce, ce-ls, sampled-row, sampled-position, sampled-batch<K>")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    ds = load_dataset(a.data, a.format)
    mcfg, tcfg = default_configs(ds)
    arrays = [torch.from_numpy(x) for x in training_arrays(ds, mcfg.max_len, tcfg.all_windows)]
    print(f"{ds.name}: {arrays[0].shape[0]} rows, L={mcfg.max_len}, {a.threads} thread(s)")
    for r in a.recipes:
        loss, d = r.split(":")
        m = replace(mcfg, d_model=int(d))
        t = replace(tcfg, loss="ce", label_smoothing=0.0)
        if loss == "ce-ls":  # full softmax with label smoothing 0.1 (the short-history default)
            t = replace(t, label_smoothing=0.1)
        elif loss.startswith("sampled-"):
            per = loss.removeprefix("sampled-")
            k = 256
            if per.startswith("batch"):
                per, k = "batch", int(per.removeprefix("batch") or 256)
            t = replace(t, loss="sampled", negatives_per=per, n_negatives=k)
        s = step_seconds(arrays, m, t, a.steps)
        epoch = s * arrays[0].shape[0] / t.batch_size
        print(f"{r:24s} {s:7.3f} s/step   ~{epoch:6.0f} s/epoch of training steps", flush=True)


if __name__ == "__main__":
    main()
