"""Training loop: next-item objective on every position, early stopping on validation NDCG@10.

Losses:
- ``ce``: full-softmax cross-entropy over the whole catalogue (SASRec+, the default);
- ``sampled``: softmax over the positive and ``n_negatives`` uniformly sampled items, drawn
  afresh for every position (``negatives_per="position"``, as RecTools' SASRec + sampled
  softmax does), for every training row (``"row"``: one set shared by the positions of a
  sequence, far cheaper on CPU) or once for the whole batch (``"batch"``);
- ``bce``: the original SASRec recipe, binary cross-entropy with one uniform negative per
  position (baseline).
"""

from __future__ import annotations

import copy
import logging
import math
import sys
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig, TrainConfig
from .data import Dataset
from .denoise import attention_on, insert_random
from .evaluate import PROTOCOL, evaluate, model_scorer, popularity_scorer
from .features import left_pad
from .model import AttnRec

__all__ = ["TrainConfig", "train", "fit_and_evaluate", "training_arrays", "row_windows", "lr_factor",
           "with_intervals"]

log = logging.getLogger(__name__)


def row_windows(n_train: int, max_len: int, all_windows: bool, warmup: int = 0) -> list[tuple[int, int]]:
    """The training rows of a history with ``n_train`` training events, as ``(lo, n)``: inputs
    ``[lo, n-1)``, targets ``[lo+1, n)``. A row holds ``max_len + warmup`` inputs; when it does
    not start at the user's first event, its first ``warmup`` positions see less past than a
    served event would and get no target, so the next (older) row ends where this one's
    targets start."""
    out = []
    n = n_train
    while n >= 2:
        lo = max(0, n - 1 - max_len - warmup)
        out.append((lo, n))
        if not all_windows or lo == 0:
            break
        n = lo + warmup + 1
    return out


def training_arrays(ds: Dataset, max_len: int, all_windows: bool = False, warmup: int = 0) -> tuple[np.ndarray, ...]:
    """(items, types, gaps, targets) int64 arrays (R, max_len + warmup): every user's newest
    window (and, with ``all_windows``, the older ones, see :func:`row_windows`); input = all but the
    newest event, target = the next event at each position (0 where there is none or where the
    position's past is cut by the window's start).

    ``warmup`` = ``history_len - 1`` for relative positions: a position's state depends on that
    many earlier events, so that many are kept before the first position that is trained."""
    width = max_len + warmup
    rows: list[list[list[int]]] = [[], [], [], []]
    for s, n_train in zip(ds.users, ds.train_len, strict=True):
        for lo, n in row_windows(n_train, max_len, all_windows, warmup):
            items = s.items[lo:n]
            targets = list(items[1:])
            if lo > 0 and warmup:
                targets[:warmup] = [0] * min(warmup, len(targets))
            rows[0].append(left_pad(items[:-1], width))
            rows[1].append(left_pad(s.types[lo : n - 1], width) if s.types is not None else [0] * width)
            rows[2].append(left_pad(s.gaps[lo : n - 1], width) if s.gaps is not None else [0] * width)
            rows[3].append(left_pad(targets, width))
    return tuple(np.asarray(r, dtype=np.int64).reshape(-1, width) for r in rows)


def _loss(model: AttnRec, cfg: TrainConfig, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
          targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    if cfg.denoise:  # random events inserted, and the attention they get is a loss (training/denoise.py)
        items, types, gaps, targets, inserted = insert_random(items, types, gaps, targets, cfg.denoise,
                                                              model.cfg.n_items, gen)
        atts: list[torch.Tensor] = []
        hidden = model(items, types, gaps, attentions=atts)
        return _next_item_loss(model, cfg, items, hidden, targets, gen) + \
            cfg.denoise_weight * attention_on(atts, inserted, items != 0)
    return _next_item_loss(model, cfg, items, model(items, types, gaps), targets, gen)


def _next_item_loss(model: AttnRec, cfg: TrainConfig, items: torch.Tensor, hidden: torch.Tensor,
                    targets: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """The next-item loss of ``cfg.loss`` over the hidden states (B, L, d) of the positions with a target."""
    sel = (targets > 1) & (items != 0)  # positions with a real next item
    if not bool(sel.any()):
        # no position of the batch has a known next item (a sparse log with rare items mapped
        # out: every target is OOV): a mean over nothing is NaN, which would poison every weight
        return hidden.sum() * 0.0
    h = hidden[sel]  # (N, d)
    y = targets[sel]  # (N,)
    # (n_items, d); with item content the combined table (training/model.py: item_table)
    emb = model.item_table() if hasattr(model, "item_table") else model.item_emb.weight
    if cfg.output_dropout:
        emb = F.dropout(emb, cfg.output_dropout, training=model.training)
    n_items = emb.shape[0]
    # item content: an item without training events (a cold item) is never a negative, or its
    # own content features (a title word no other item has) would only learn to push it down
    warm = model.trained_items() if hasattr(model, "trained_items") else None  # (n_items,) bool or None
    # with drop_hardest, per-position losses, then the truncated mean; else the plain mean
    reduction = "none" if cfg.drop_hardest else "mean"
    if cfg.loss == "ce":
        cand, target = emb[2:], y - 2  # (n_items - 2, d): PAD and OOV are never predicted
        if warm is not None:  # targets are training events, so always among the kept items
            cand, target = cand[warm[2:]], (torch.cumsum(warm[2:].long(), 0) - 1)[target]
        return _reduce(F.cross_entropy(h @ cand.t(), target, label_smoothing=cfg.label_smoothing,
                                       reduction=reduction), cfg.drop_hardest)
    if cfg.loss == "bce":
        neg = torch.randint(2, n_items, y.shape, generator=gen)  # (N,)
        pos_logit = (h * emb[y]).sum(-1)
        neg_logit = (h * emb[neg]).sum(-1)
        bce = F.binary_cross_entropy_with_logits(pos_logit, torch.ones_like(pos_logit), reduction=reduction) + \
            F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit), reduction=reduction,
                                               weight=None if warm is None else warm[neg].to(neg_logit.dtype))
        return _reduce(bce, cfg.drop_hardest)
    pos_logit = (h * emb[y]).sum(-1, keepdim=True)  # (N, 1)
    K = cfg.n_negatives
    if cfg.negatives_per == "batch":
        neg = torch.randint(2, n_items, (1, K), generator=gen).expand(len(y), K)  # (N, K), one set
        neg_logit = h @ emb[neg[0]].t()  # (N, K)
    elif cfg.negatives_per == "row":
        row_neg = torch.randint(2, n_items, (items.shape[0], K), generator=gen)  # (B, K)
        neg_logit = (hidden @ emb[row_neg].transpose(1, 2))[sel]  # (B, L, K) -> (N, K)
        neg = row_neg.unsqueeze(1).expand(-1, items.shape[1], -1)[sel]  # (N, K)
    else:
        neg = torch.randint(2, n_items, (len(y), K), generator=gen)  # (N, K): per position
        neg_logit = torch.bmm(emb[neg], h.unsqueeze(-1)).squeeze(-1)  # (N, K, d) @ (N, d, 1) -> (N, K)
    neg_logit = neg_logit.masked_fill(neg == y.unsqueeze(1), -1e9)  # accidental hits
    if warm is not None:
        neg_logit = neg_logit.masked_fill(~warm[neg], -1e9)  # cold items are never negatives
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return _reduce(F.cross_entropy(logits, torch.zeros(len(y), dtype=torch.long), reduction=reduction),
                   cfg.drop_hardest)


def _reduce(loss: torch.Tensor, drop: float) -> torch.Tensor:
    """``loss`` as computed (already a mean) when ``drop`` is 0, else the truncated mean of the
    per-position losses."""
    return _truncated_mean(loss, drop) if drop else loss


def _truncated_mean(per_position: torch.Tensor, drop: float) -> torch.Tensor:
    """The mean of the per-position losses (N,) without the share ``drop`` of the largest: a
    target the model finds very unlikely is more often a misclick than a lesson (truncated loss,
    Wang et al., "Denoising Implicit Feedback for Recommendation", WSDM 2021)."""
    keep = max(1, int(round(per_position.numel() * (1 - drop))))
    return per_position.topk(keep, largest=False).values.mean()


def _batches(lengths: np.ndarray, tcfg: TrainConfig, rng: np.random.Generator) -> list[torch.Tensor]:
    """One epoch's batches of row indices: a random permutation cut into batches, or with
    ``bucket_batches`` each chunk of 50 batches of that permutation sorted by length before it
    is cut, and the batches then shuffled, so a batch is rarely padded to a much longer row."""
    perm = rng.permutation(len(lengths))
    bs = tcfg.batch_size
    if not tcfg.bucket_batches:
        return [torch.from_numpy(perm[i : i + bs]) for i in range(0, len(perm), bs)]
    chunk = 50 * bs
    out = []
    for c in range(0, len(perm), chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        out += [part[i : i + bs] for i in range(0, len(part), bs)]
    return [torch.from_numpy(out[i]) for i in rng.permutation(len(out))]


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """The learning rate's multiplier at optimiser step ``step`` (0-based) of ``total``: a linear
    warm-up over the first ``warmup`` steps, then constant, or decaying to 0 at ``total``
    (``linear`` or ``cosine``)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant" or total <= warmup:
        return 1.0
    frac = min(1.0, (step - warmup) / (total - warmup))
    return 1.0 - frac if schedule == "linear" else 0.5 * (1.0 + math.cos(math.pi * frac))


class _Ema:
    """Exponential moving average of a model's parameters, updated after every optimiser step
    (decay warmed up as ``min(decay, (1 + n) / (10 + n))`` so early averages are not stale)."""

    def __init__(self, model: AttnRec, decay: float) -> None:
        self.decay, self.n = decay, 0
        self.params = [p for p in model.parameters()]
        self.avg = [p.detach().clone() for p in self.params]

    @torch.no_grad()
    def update(self) -> None:
        d = min(self.decay, (1 + self.n) / (10 + self.n))
        self.n += 1
        torch._foreach_lerp_(self.avg, [p.detach() for p in self.params], 1.0 - d)

    @torch.no_grad()
    def swap(self) -> None:
        """Exchange the live weights and the average (call twice to undo)."""
        for p, a in zip(self.params, self.avg, strict=True):
            tmp = p.detach().clone()
            p.copy_(a)
            a.copy_(tmp)


def batch_tensors(
    arrays: list[torch.Tensor], idx: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(items, types, gaps, targets) of the rows ``idx``, without the columns that are padding
    for the whole batch (short-history data trains faster)."""
    items, types, gaps, targets = (a[idx] for a in arrays)
    keep = int((items != 0).any(0).nonzero()[0].item())
    return items[:, keep:], types[:, keep:], gaps[:, keep:], targets[:, keep:]


def _epoch(model: AttnRec, opt: torch.optim.Optimizer, tcfg: TrainConfig, arrays: list[torch.Tensor],
           batches: list[torch.Tensor], gen: torch.Generator, bar: Any, best: dict[str, Any],
           ema: _Ema | None = None, schedule: tuple[int, int, float] | None = None) -> tuple[float, int]:
    """One pass over the training rows, batch by batch; returns the summed batch loss and the
    batches left out for a non-finite loss.
    ``schedule``: (steps so far, steps of the whole run, base rate) when the learning rate
    follows ``tcfg.lr_schedule`` / ``warmup_epochs`` (:func:`lr_factor`)."""
    total, skipped = 0.0, 0
    for i, idx in enumerate(batches):
        if schedule is not None:
            done, steps, base = schedule
            f = lr_factor(done + i, steps, tcfg.lr_schedule, round(tcfg.warmup_epochs * len(batches)))
            for g in opt.param_groups:
                g["lr"] = base * f
        loss = _loss(model, tcfg, *batch_tensors(arrays, idx), gen)
        if not bool(torch.isfinite(loss)):
            # one step on a non-finite loss makes every weight NaN: the batch is left out
            skipped += 1
            if skipped == 1:
                log.warning("a training batch had a non-finite loss (%s): left out (the epoch's skipped_batches "
                            "counts them)", loss.item())  # fmt: skip
            continue
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update()
        total += loss.item()
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}", best_val_ndcg10=f"{max(best['ndcg@10'], 0):.4f}")
    return total, skipped


def train(
    ds: Dataset,
    mcfg: ModelConfig,
    tcfg: TrainConfig,
    progress: bool = False,
    init_state: dict[str, torch.Tensor] | None = None,
    model: Any = None,
) -> tuple[AttnRec, dict[str, Any]]:
    """Train on ``ds``; returns the best model (by validation NDCG@10) and the history.

    ``init_state`` (a state_dict of the same architecture) warm-starts training, e.g. the
    periodic trainer continuing from the promoted model with a grown vocabulary.
    """
    torch.set_num_threads(max(1, tcfg.threads))
    torch.manual_seed(tcfg.seed)
    np_rng = np.random.default_rng(tcfg.seed)
    gen = torch.Generator().manual_seed(tcfg.seed)
    assert mcfg.n_items == ds.vocab.n_items, f"model n_items {mcfg.n_items} != vocabulary {ds.vocab.n_items}"
    # ``model``: another module with AttnRec's scorer interface (training/baselines.py)
    model = model if model is not None else AttnRec(mcfg)
    if init_state is not None:
        model.load_state_dict(init_state)
    if ds.content is not None and getattr(model, "content", None) is not None:
        model.set_content(ds.content)  # item content features (training/content.py), over a warm start's
    opt = torch.optim.Adam(model.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
    base_lr = tcfg.lr  # a schedule's peak; a plateau decay (lr_decay) scales it
    ema = _Ema(model, tcfg.ema) if tcfg.ema else None
    row_len, warmup = tcfg.rows(mcfg)  # (max_len, warm-up) of a training row
    arrays = [torch.from_numpy(a) for a in training_arrays(ds, row_len, tcfg.all_windows, warmup)]
    n = arrays[0].shape[0]
    if n == 0:
        from attnrec.errors import ModelError

        raise ModelError(f"{ds.name}: no user has two or more training events")
    steps = math.ceil(n / tcfg.batch_size)
    lengths = (arrays[0] != 0).sum(1).numpy()  # (R,) real events per training row
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": 0, "ndcg@10": -1.0}
    best_state = copy.deepcopy(model.state_dict())
    t0, c0 = time.monotonic(), time.process_time()  # wall clock; CPU time of this process (all threads)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=steps, unit="batch", dynamic_ncols=True, leave=False, file=sys.stderr)
    bad = 0
    stop_reason = "max epochs"
    for epoch in range(1, tcfg.epochs + 1):
        model.train()
        if bar is not None:
            bar.reset()
            bar.set_description(f"epoch {epoch}/{tcfg.epochs}")
        if tcfg.max_cpu_minutes and history and \
                time.process_time() - c0 + history[-1]["epoch_cpu_seconds"] > tcfg.max_cpu_minutes * 60:
            stop_reason = f"CPU budget of {tcfg.max_cpu_minutes} min"
            break
        batches = _batches(lengths, tcfg, np_rng)
        total, skipped, te, ce = 0.0, 0, time.monotonic(), time.process_time()
        scheduled = tcfg.lr_schedule != "constant" or tcfg.warmup_epochs > 0
        try:
            total, skipped = _epoch(model, opt, tcfg, arrays, batches, gen, bar, best, ema,
                           ((epoch - 1) * steps, tcfg.epochs * steps, base_lr) if scheduled else None)
            model.eval()
            if ema is not None:
                ema.swap()  # validate (and keep, if best) the averaged weights
            val = evaluate(model_scorer(model), ds, "val", mcfg.history_len, max_users=tcfg.val_max_users, seed=tcfg.seed)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the best epoch so far and finish
            stop_reason = "interrupted"
            log.warning("training interrupted in epoch %d; keeping the best epoch so far (%d)", epoch, best["epoch"])
            break
        rec = {"epoch": epoch, "loss": total / max(1, steps - skipped), "skipped_batches": skipped, "lr": opt.param_groups[0]["lr"], "val_ndcg@10": val["ndcg@10"], "val_hr@10": val["hr@10"],
               "epoch_seconds": round(time.monotonic() - te, 2), "epoch_cpu_seconds": round(time.process_time() - ce, 2),
               "elapsed_seconds": round(time.monotonic() - t0, 2)}
        history.append(rec)
        log.info("epoch %d loss %.4f val ndcg@10 %.4f hr@10 %.4f (%.1fs)", epoch, rec["loss"], val["ndcg@10"],
                 val["hr@10"], rec["epoch_seconds"])
        if val["ndcg@10"] > best["ndcg@10"]:
            best = {"epoch": epoch, "ndcg@10": val["ndcg@10"], "hr@10": val["hr@10"]}
            best_state = copy.deepcopy(model.state_dict())
            bad = 0
        else:
            bad += 1
            if tcfg.lr_decay < 1 and bad % tcfg.lr_patience == 0:
                base_lr *= tcfg.lr_decay
                for g in opt.param_groups:
                    g["lr"] *= tcfg.lr_decay
                log.info("no validation gain for %d epochs: learning rate -> %.2e", bad, opt.param_groups[0]["lr"])
            if bad >= tcfg.patience:
                stop_reason = f"no validation gain for {tcfg.patience} epochs"
                break
        if ema is not None:
            ema.swap()  # back to the live weights for the next epoch
        if tcfg.max_minutes and time.monotonic() - t0 > tcfg.max_minutes * 60:
            stop_reason = f"time budget of {tcfg.max_minutes} min"
            break
    if bar is not None:
        bar.close()
    model.load_state_dict(best_state)
    model.eval()
    info = {"best_epoch": best["epoch"], "epochs_run": len(history), "stop_reason": stop_reason,
            "curve": history, "train_seconds": round(time.monotonic() - t0, 1),
            "train_cpu_seconds": round(time.process_time() - c0, 1), "train_sequences": n}
    log.info("best epoch %d (val ndcg@10 %.4f), stopped: %s", best["epoch"], best["ndcg@10"], stop_reason)
    return model, info


def fit_and_evaluate(ds: Dataset, mcfg: ModelConfig, tcfg: TrainConfig, *, progress: bool = False,
                     init_state: dict[str, torch.Tensor] | None = None, model: Any = None
                     ) -> tuple[AttnRec, dict[str, Any]]:
    """The training pipeline every caller uses (``attnrec train``, the periodic trainer, the
    demo): :func:`train`, then the one seeded evaluation on validation and test.

    Returns the best model and its metrics (``metrics.json`` of a checkpoint): protocol,
    dataset, best epoch, stop reason, wall and CPU seconds, val and test figures with their
    bootstrap intervals, data statistics and the learning curve; ``per_user`` holds each
    split's per-user ranks (the checkpoint keeps them in ``per_user.json``)."""
    model, info = train(ds, mcfg, tcfg, progress=progress, init_state=init_state, model=model)
    scorer = model_scorer(model)
    t0 = time.monotonic()
    val, val_users = with_intervals(evaluate(scorer, ds, "val", mcfg.history_len, seed=tcfg.seed, return_ranks=True))
    test, test_users = with_intervals(evaluate(scorer, ds, "test", mcfg.history_len, seed=tcfg.seed, return_ranks=True))
    # the popularity fallback on the same validation cases: a first model must beat it to serve
    # (the promotion gate, training/retrain.py)
    pop = evaluate(popularity_scorer(ds), ds, "val", mcfg.history_len, seed=tcfg.seed)
    metrics = {"protocol": PROTOCOL, "dataset": ds.name, "best_epoch": info["best_epoch"],
               "epochs_run": info["epochs_run"], "stop_reason": info["stop_reason"],
               "train_seconds": info["train_seconds"], "train_cpu_seconds": info["train_cpu_seconds"],
               "eval_seconds": round(time.monotonic() - t0, 1),
               "val": val, "test": test, "val_popular": {k: pop[k] for k in ("hr@10", "ndcg@10", "users")},
               "data": ds.stats(), "curve": info["curve"], "per_user": {"val": val_users, "test": test_users}}
    return model, metrics


def with_intervals(res: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """An :func:`evaluate` result with ``return_ranks`` -> (its metrics with ``intervals``: the
    95 % bootstrap interval over users of each, :mod:`attnrec.training.stats`; its per-user
    results ``{"user_ids", "ranks"}``)."""
    from .stats import intervals, per_user_values

    res = dict(res)
    per_user = {"user_ids": res.pop("user_ids"), "ranks": res.pop("ranks")}
    res["intervals"] = intervals(per_user_values(per_user["ranks"])) if per_user["ranks"] else {}
    return res, per_user
