"""The settings of ``attnrec train`` and ``attnrec eval``: the data, the training options and
what to evaluate. Torch-free."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field

from attnrec.settings import Settings

__all__ = ["TrainingSettings"]


class TrainingSettings(Settings):
    """The base settings plus the data, the training options, the item file and the evaluation's."""

    sections: ClassVar[dict[str, str]] = {"data": "Training and evaluation (`attnrec train`, `attnrec eval`)"}

    data: Path | None = Field(None, description="ATTNREC_DATA: dataset: a file, a gsasrec split directory, or a directory of *.jsonl events")
    data_format: Literal["s3", "gsasrec", "events"] = Field("events", description="ATTNREC_DATA_FORMAT: s3, gsasrec or events")
    train_out: Path | None = Field(None, description="ATTNREC_TRAIN_OUT: checkpoint directory to write")
    train_threads: int = Field(2, ge=1, description="ATTNREC_TRAIN_THREADS: torch intra-op threads")
    train_seed: int = Field(42, description="ATTNREC_TRAIN_SEED: random seed")
    train_max_len: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_MAX_LEN: sequence length L (unset: chosen from the data)")
    train_d_model: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_D_MODEL: embedding width (unset: from the data)")
    train_blocks: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_BLOCKS: transformer blocks (unset: from the data)")
    train_heads: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_HEADS: attention heads (unset: from the data)")
    train_dropout: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_DROPOUT: dropout (unset: from the data)")
    train_block: Literal["pre_ln", "sasrec"] | None = Field(None, description="ATTNREC_TRAIN_BLOCK: transformer block layout (unset: from the data)")
    train_epochs: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_EPOCHS: max epochs")
    train_patience: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_PATIENCE: epochs without a validation NDCG@10 gain before stopping")
    train_batch_size: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_BATCH_SIZE: training batch size")
    train_lr: float | None = Field(None, gt=0, description="ATTNREC_TRAIN_LR: Adam learning rate")
    train_lr_decay: float | None = Field(None, gt=0, le=1, description="ATTNREC_TRAIN_LR_DECAY: multiply the learning rate by this after LR_PATIENCE epochs without a gain (1 = constant)")
    train_lr_patience: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_LR_PATIENCE: epochs without a validation gain before each learning-rate decay")
    train_output_dropout: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_OUTPUT_DROPOUT: dropout on the item embeddings when they score (training only)")
    train_ema: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_EMA: decay per step of the weight average that is validated and kept (0 = off)")
    train_weight_decay: float | None = Field(None, ge=0, description="ATTNREC_TRAIN_WEIGHT_DECAY: Adam weight decay")
    train_label_smoothing: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_LABEL_SMOOTHING: with loss ce, the share of the target's weight spread over all items (0 = off)")
    train_denoise: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_DENOISE: share of random events inserted into every training batch, whose attention is a loss, so the model learns to look away from misclicks (training/denoise.py; 0 = off; unset: 0.2 for short histories, 0.1 for event streams, 0 for long histories)")
    train_denoise_weight: float | None = Field(None, ge=0, description="ATTNREC_TRAIN_DENOISE_WEIGHT: with DENOISE, the weight of the attention mass on the inserted events in the loss (unset: 1)")
    train_drop_hardest: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_DROP_HARDEST: share of each training batch's positions with the largest loss left out of it, so noisy targets (misclicks) teach less (0 = off)")
    train_loss: Literal["ce", "sampled", "bce"] | None = Field(None, description="ATTNREC_TRAIN_LOSS: full softmax, sampled softmax, or SASRec's BCE")
    train_negatives: int | None = Field(None, ge=1, description="ATTNREC_TRAIN_NEGATIVES: negatives for loss sampled")
    train_negatives_per: Literal["position", "row", "batch"] | None = Field(None, description="ATTNREC_TRAIN_NEGATIVES_PER: loss sampled draws negatives per position, training row or batch")
    train_max_minutes: float | None = Field(None, ge=0, description="ATTNREC_TRAIN_MAX_MINUTES: wall-clock training budget in minutes (0 = none)")
    train_bucket: bool | None = Field(None, description="ATTNREC_TRAIN_BUCKET: batches of rows of similar length instead of random batches")
    train_no_types: bool = Field(False, description="ATTNREC_TRAIN_NO_TYPES: ignore event types even when the data has them")
    train_no_gaps: bool = Field(False, description="ATTNREC_TRAIN_NO_GAPS: ignore time gaps even when the data has timestamps")
    train_items: Path | None = Field(None, description="ATTNREC_TRAIN_ITEMS: item attribute file (CSV or JSONL: item_id, category, brand, price_bucket or price, title) joined into the item representation; its items without events become cold items scored from content")
    train_id_dropout: float | None = Field(None, ge=0, lt=1, description="ATTNREC_TRAIN_ID_DROPOUT: with ITEMS, the share of item ids masked per training step so items are scored from content too (unset: 0.3)")
    eval_model: Path | None = Field(None, description="ATTNREC_EVAL_MODEL: checkpoint directory to evaluate (from attnrec train)")
    eval_baseline: Literal["popular", "sasrec-bce", "gru4rec", "meanpool"] | None = Field(None, description="ATTNREC_EVAL_BASELINE: evaluate a baseline instead of a model, trained here on the data with the train options (popular: training counts; sasrec-bce: the attention model with SASRec's BCE loss; gru4rec, meanpool: non-attention models, training/baselines.py); evaluation only, nothing is exported")
    eval_train: bool = Field(False, description="ATTNREC_EVAL_TRAIN: train the attention model here with the data defaults and the train options, then evaluate it (no checkpoint is written; instead of MODEL)")
    eval_noise: float = Field(0.0, ge=0, lt=1, description="ATTNREC_EVAL_NOISE: share of random catalogue items inserted into every user's training events and validation/test input (targets untouched; seeded by SEED); the model is trained on the noisy data, so it needs TRAIN or BASELINE (training/noise.py)")
    eval_keep_history: bool = Field(False, description="ATTNREC_EVAL_KEEP_HISTORY: do not exclude the user's input items from the ranking (default: excluded, the published protocol)")
    eval_split: Literal["test", "val"] = Field("test", description="ATTNREC_EVAL_SPLIT: which split to report")
    eval_json: str = Field("-", description="ATTNREC_EVAL_JSON: write the result JSON to this file (- = stdout only)")
