"""The defaults chosen by the data: :func:`default_configs` gives the model and training
configurations ``attnrec train`` starts from (every option the settings leave unset keeps them).

Each default names the evidence it was chosen on; the figures and their commands are in
docs/BENCHMARKS.md.
"""

from __future__ import annotations

import math

from .config import ModelConfig, TrainConfig
from .content import content_model_fields
from .data import Dataset
from .features import N_EVENT_TYPES, N_GAP_BUCKETS
from .train import row_windows

__all__ = ["default_configs", "EMA_EPOCHS", "CONTENT_ID_DROPOUT", "DENOISE", "DENOISE_SHORT", "FULL_SOFTMAX_MAX_ITEMS"]

#: Default weight averaging: the EMA's horizon in epochs (decay per step = 1 - 1 / (this * steps per epoch)).
EMA_EPOCHS = 6
#: Default id-dropout of a model with item content (ModelConfig.id_dropout).
CONTENT_ID_DROPOUT = 0.3
#: Default share of random events inserted into each training batch (TrainConfig.denoise) of
#: event streams, and of short benchmark histories (e.g. Beauty); long histories: none.
DENOISE = 0.1
DENOISE_SHORT = 0.2
#: Above this catalogue size the default loss is sampled softmax instead of full softmax.
FULL_SOFTMAX_MAX_ITEMS = 200_000


def default_configs(ds: Dataset) -> tuple[ModelConfig, TrainConfig]:
    """Defaults chosen by the data: sequence length from the length distribution, depth and
    dropout from the mean length, loss from the catalogue size, side features when the data has
    them, the weight-average decay from the steps per epoch, denoising (``DENOISE``,
    ``DENOISE_SHORT``) but for long histories (docs/BENCHMARKS.md, Quality).

    Width: 128 for short histories of benchmark files, else 64 (see the comment below).
    Block: the SASRec authors' block (``block="sasrec"``) for short histories, pre-LN for long
    ones. With random batches and the weight average, the SASRec block reached Beauty's pre-LN
    plateau (validation NDCG@10 0.066) in 8 epochs instead of ~20 and peaked higher (0.068;
    test 0.0556 / HR@10 0.0900 against 0.0526 / 0.0869). (Session 2 had measured it lower, but
    with length-bucketed batches.) Long histories (ML-1M) keep pre-LN, measured there.
    Loss: full softmax up to ``FULL_SOFTMAX_MAX_ITEMS``; on Beauty it reached a higher
    validation NDCG@10 (0.066) than sampled softmax with 256 uniform negatives per row (0.048
    pre-LN, 0.057 SASRec block), although each epoch costs ~4x more CPU (the sampled figures
    were measured with ``bucket_batches``; see docs/BENCHMARKS.md, Quality).
    Short benchmark histories also train at half the learning rate (5e-4) with label smoothing
    0.1 (session 5; the comment below)."""
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
        # histories: 64 as in the published ML-1M configurations; short sparse histories: 128
        # (Beauty: test NDCG@10 0.0556 -> 0.0563, best epoch 7 instead of 12; BENCHMARKS, session 4)
        d_model=128 if short_benchmark else 64,
        n_blocks=2 if long_seqs else 1,
        n_heads=1,
        dropout=0.1 if long_seqs else 0.2,  # dense long histories (ML-1M) need less (as in SASRec+ / RecTools)
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
        # half the learning rate and label smoothing 0.1: Beauty peaks later (epoch ~13 instead of 7)
        # and higher (test HR@10 0.0905 -> 0.092 on the mean of seeds; BENCHMARKS, session 5). Event
        # streams keep 1e-3 and no smoothing (not measured there; the periodic retrainer's runs are
        # capped in epochs and minutes, and the slower start would cost them).
        tcfg.lr, tcfg.label_smoothing = 5e-4, 0.1
    if not long_seqs:
        # denoising (training/denoise.py). Short benchmark histories: 0.2 lifted Beauty test HR@10 /
        # NDCG@10 from 0.0902 / 0.0567 to 0.0944 / 0.0585 on the mean of seeds 42-44 (0.1: 0.0920 /
        # 0.0572). Event streams: 0.1 cut the last layer's attention on inserted misclicks from
        # 0.79x to 0.36x their share of the window at -1.8 % test NDCG@10 on clean synthetic data
        # (0.2 cost more accuracy there). Not measured on long histories (ML-1M). docs/BENCHMARKS.md.
        tcfg.denoise = DENOISE_SHORT if short_benchmark else DENOISE
    # Validate and keep a moving average of the weights over the last ~EMA_EPOCHS epochs:
    # on Beauty it lifted test NDCG@10 0.0506 -> 0.0526 and HR@10 0.0819 -> 0.0869 at no cost.
    rows = sum(len(row_windows(n, max_len, tcfg.all_windows, mcfg.warmup)) for n in ds.train_len)
    steps = max(1, math.ceil(rows / tcfg.batch_size))
    tcfg.ema = round(1.0 - 1.0 / (EMA_EPOCHS * steps), 6)
    return mcfg, tcfg
