"""The defaults chosen by the data: :func:`default_configs` gives the model and training
configurations ``attnrec train`` starts from (every option the settings leave unset keeps them).

A default is chosen on validation figures only: the test split is for reporting. Each comment
below names the validation evidence, Beauty's validation NDCG@10 on all 22,363 users unless it
says otherwise, with the date and the commit that recorded it in docs/BENCHMARKS.md (``git show
<commit> -- docs/BENCHMARKS.md``: the run's command, machine and load). Where no validation
evidence was recorded, the comment says so; those defaults are open questions, not findings
(docs/BENCHMARKS.md, Defaults, lists them with the CPU it would take to verify each).
"""

from __future__ import annotations

import math

from .config import ModelConfig, TrainConfig
from .content import content_model_fields
from .data import Dataset
from .features import N_EVENT_TYPES, N_GAP_BUCKETS
from .train import row_windows

__all__ = ["default_configs", "ema_decay", "EMA_EPOCHS", "CONTENT_ID_DROPOUT", "DENOISE", "DENOISE_SHORT", "FULL_SOFTMAX_MAX_ITEMS"]

#: Default weight averaging: the EMA's horizon in epochs (decay per step = 1 - 1 / (this * steps per epoch)).
EMA_EPOCHS = 6
#: Default id-dropout of a model with item content (ModelConfig.id_dropout). On validation (the
#: synthetic content world with its cold targets on the validation split, content_eval
#: --cold-target val; 2026-12-08, b9d99d8), NDCG@10 over all 2,000 users: 0 0.135, 0.15 0.167,
#: 0.3 0.163, 0.5 0.161: 0.3 ahead of 0 (+0.028 ± 0.022), a tie with 0.15 and 0.5 (docs/BENCHMARKS.md,
#: Defaults); 0.3 stays, in the middle of that plateau.
CONTENT_ID_DROPOUT = 0.3
#: Default share of random events inserted into each training batch (TrainConfig.denoise) of
#: event streams, and of short benchmark histories (e.g. Beauty); long histories: none (see
#: :func:`default_configs` for what each level rests on).
DENOISE = 0.15
DENOISE_SHORT = 0.2
#: Above this catalogue size the default loss is sampled softmax instead of full softmax.
FULL_SOFTMAX_MAX_ITEMS = 200_000


def default_configs(ds: Dataset) -> tuple[ModelConfig, TrainConfig]:
    """Defaults chosen by the data: sequence length from the length distribution, depth and
    dropout from the mean length, loss from the catalogue size, side features when the data has
    them, the weight-average decay from the steps per epoch, denoising (``DENOISE``,
    ``DENOISE_SHORT``) but for long histories.

    Short histories (mean length < 50, e.g. Beauty) and long ones (e.g. ML-1M) differ in width,
    block, depth, dropout, learning rate, smoothing and denoising; the comments in the body give
    the evidence for each. Loss: full softmax up to ``FULL_SOFTMAX_MAX_ITEMS`` items. On Beauty
    it plateaued higher on validation NDCG@10 (0.066) than sampled softmax with 256 uniform
    negatives per row (0.048 with pre-LN blocks, 0.057 with the SASRec block), although each
    epoch costs ~4x the CPU (2026-11-28, ``7e821f5``; the sampled runs used length-bucketed
    batches, which cost every recipe about 0.01 there); on ML-1M sampled softmax per row
    flattened at 0.150-0.161 validation NDCG@10 (512 users) while full softmax reached 0.1855
    (2026-11-28, ``26d44ed``)."""
    st = ds.stats()
    p90 = st["p90_len"]
    long_seqs = st["mean_len"] >= 50
    if ds.fmt == "events":
        max_len = 50  # our own click streams: the serving latency budget (DESIGN.md) is measured at L=50
    elif long_seqs:
        # ML-1M: a band of 100 in each of 2 blocks reaches 199 events back, which the worker's
        # Redis buffer (200) holds, so a lost cache is rebuilt exactly
        max_len = 100
    else:  # short histories: cover most of them (Beauty -> 50)
        max_len = int(min(200, max(50, 50 * math.ceil(p90 / 50))))
    short_benchmark = ds.fmt != "events" and not long_seqs  # e.g. Beauty
    mcfg = ModelConfig(
        n_items=ds.vocab.n_items,
        max_len=max_len,
        # event streams: the serving latency budget (DESIGN.md) is measured at d=64; long dense
        # histories: 64 as in the published ML-1M configurations (d=128 with dropout 0.3 trailed
        # it on validation: 0.1591 against 0.1645 at epoch 19; 2026-11-28, dfdd0b9); short sparse
        # histories: 128 (Beauty, SASRec block, seed 42: validation peak 0.0707 at epoch 7 against
        # 0.0680 at epoch 12 for d=64 and 0.0700 for d=256; 2026-11-28, 84e5e12)
        d_model=128 if short_benchmark else 64,
        n_blocks=2 if long_seqs else 1,
        n_heads=1,
        # short histories: 0.2 (Beauty, d=128: validation 0.0707 / 0.0695 for seeds 42 / 43 against
        # 0.0695 / 0.0685 with 0.3; 2026-11-28, 84e5e12); long histories: 0.1 as in the published
        # SASRec+ / RecTools ML-1M configurations (0.1 against 0.2 not compared here)
        dropout=0.1 if long_seqs else 0.2,
        # short histories: the SASRec authors' block (Beauty, d=64, seed 42: validation peak 0.0680
        # at epoch 12 against pre-LN's 0.0663 at epoch 21); long ones: pre-LN (ML-1M, 512 users:
        # validation 0.1829 at epoch 29 against the SASRec block's 0.1742); 2026-11-28, 84e5e12
        block="pre_ln" if long_seqs else "sasrec",
        n_event_types=N_EVENT_TYPES if ds.has_types else 0,
        n_gap_buckets=N_GAP_BUCKETS if ds.has_time else 0,
        positions="relative",  # cacheable: the worker scores a new event with one step (docs/DESIGN.md)
        # item content (attnrec train --items): attribute and title features, and id-dropout so
        # the model learns to score from content (cold items have only that)
        **(content_model_fields(ds.content_info or {}, ds.content) if ds.content is not None else {}),
        id_dropout=CONTENT_ID_DROPOUT if ds.content is not None else 0.0,
    )
    tcfg = TrainConfig(
        loss="ce" if ds.vocab.n_items <= FULL_SOFTMAX_MAX_ITEMS else "sampled",
        # validation on a few hundred users is noisy (+-0.01 NDCG@10): wait longer before stopping
        patience=20 if len(ds.val) <= 1_000 else 10,
        val_max_users=10_000 if len(ds.val) > 100_000 else 0,
        # histories longer than the window on average: use all of them, not only the newest L+1
        all_windows=st["mean_len"] > max_len,
    )
    if short_benchmark and tcfg.loss == "ce":
        # half the learning rate and label smoothing 0.1: Beauty peaks later (epoch 12-13 instead of
        # 7) and a little higher on validation: 0.0712 / 0.0706 / 0.0700 for seeds 42 / 43 / 44
        # against 0.0707 / 0.0695 / 0.0697 at 1e-3 without smoothing; 5e-4 alone, seed 42: 0.0709
        # (2026-11-28, dfdd0b9). The smoothing's own share (0.0003 on one seed) is within the seed
        # spread. Long histories keep 1e-3 and no smoothing (ML-1M: smoothing level with none on
        # validation epoch for epoch, 0.1815 against 0.1817 at epoch 25; same commit). Event streams
        # keep them too (not measured there; the periodic retrainer's runs are capped in epochs and
        # minutes, and the slower start would cost them).
        tcfg.lr, tcfg.label_smoothing = 5e-4, 0.1
    if not long_seqs:
        # denoising (training/denoise.py). Short benchmark histories: 0.2 against none, Beauty
        # seeds 42-44: validation 0.0731-0.0739 against 0.0706-0.0714 (2026-12-01, 10e34b1; the
        # validation column of the baselines table). 0.2 against 0.1, seed 42, 30 epochs each
        # side by side: validation NDCG@10 0.0733 against 0.0719, paired +0.0014 (+0.0003 to
        # +0.0025), HR@10 +0.0024 (+0.0002 to +0.0045) (2026-12-08, b9d99d8). Event streams: the
        # smallest level whose explanation looks away from misclicks (attention on inserted events
        # below half their share of the window) on validation, where accuracy allows: synthetic
        # events with a fifth inserted, 40 epochs, seed 42, the attention averaged over blocks on
        # validation cases: 0.1 0.58x, 0.15 0.497x, 0.2 0.43x; validation NDCG@10 on clean data 0.1
        # 0.2015, 0.15 0.2009 (a tie, -0.0006, -0.0048 to +0.0034), 0.2 0.1941 (-0.0074, -0.0133 to
        # -0.0020) (2026-12-08, b9d99d8; docs/BENCHMARKS.md, Defaults). Long histories (ML-1M): none,
        # 0.1 trailed on validation at every epoch (0.1762 against 0.1914 at epoch 24; 2026-12-01,
        # eba5949).
        tcfg.denoise = DENOISE_SHORT if short_benchmark else DENOISE
    # Validate and keep a moving average of the weights over the last ~EMA_EPOCHS epochs. Beauty,
    # seed 42, pre-LN d=64: validation peak 0.0663 against 0.0658 without it (2026-11-28, 26d44ed):
    # a small gain, on one seed; a slower average (0.9995) was compared on test figures only.
    tcfg.ema = ema_decay(ds, mcfg, tcfg)
    return mcfg, tcfg


def ema_decay(ds: Dataset, mcfg: ModelConfig, tcfg: TrainConfig) -> float:
    """The weight average's decay per step for a horizon of ``EMA_EPOCHS`` epochs of these
    configurations' training rows and batches."""
    row_len, warmup = tcfg.rows(mcfg)
    rows = sum(len(row_windows(n, row_len, tcfg.all_windows, warmup)) for n in ds.train_len)
    steps = max(1, math.ceil(rows / tcfg.batch_size))
    return round(1.0 - 1.0 / (EMA_EPOCHS * steps), 6)
