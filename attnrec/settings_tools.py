"""The fields of the command-line tools (replay, demo, train/eval, bench): part of
:class:`attnrec.settings.Settings`, kept here so each module stays one job's size."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings

__all__ = ["ToolFields"]


class ToolFields(BaseSettings):
    """Fields only; validation and the environment prefix are :class:`~attnrec.settings.Settings`'."""

    # --- attnrec replay ------------------------------------------------------------------------
    replay_data: Path | None = Field(None, description="ATTNREC_REPLAY_DATA: JSONL/CSV file of click events, or a DIGINETICA item-views CSV")
    replay_synthetic: bool = Field(False, description="ATTNREC_REPLAY_SYNTHETIC: synthetic events with planted structure instead of a file")
    replay_rate: str = Field("1000", description="ATTNREC_REPLAY_RATE: events/s, or max")
    replay_count: int = Field(10_000, ge=0, description="ATTNREC_REPLAY_COUNT: events to send (0 = the whole file)")
    replay_seed: int = Field(7, description="ATTNREC_REPLAY_SEED: seed of the synthetic events")
    replay_scenario: Literal["live"] | None = Field(None, description="ATTNREC_REPLAY_SCENARIO: live: the live-commerce simulator (rooms, products, stock, bursts) to the clicks and catalog topics")
    replay_burst_at_s: float | None = Field(None, ge=0, description="ATTNREC_REPLAY_BURST_AT_S: live scenario: a burst starts this many seconds in (unset: none)")
    replay_burst_s: float = Field(60.0, gt=0, description="ATTNREC_REPLAY_BURST_S: live scenario: the burst's length")
    replay_burst_factor: float = Field(10.0, ge=1, description="ATTNREC_REPLAY_BURST_FACTOR: live scenario: the burst's rate over the base rate")
    replay_topic: str | None = Field(None, description="ATTNREC_REPLAY_TOPIC: target topic (default CLICKS_TOPIC)")

    # --- attnrec demo --------------------------------------------------------------------------
    demo_events: int = Field(6000, ge=100, description="ATTNREC_DEMO_EVENTS: events replayed live")
    demo_rate: float = Field(500.0, gt=0, description="ATTNREC_DEMO_RATE: replay rate, events/s")
    demo_train_seconds: float = Field(60.0, gt=0, description="ATTNREC_DEMO_TRAIN_SECONDS: training budget of each model")
    demo_scenario: Literal["synthetic", "live"] = Field("synthetic", description="ATTNREC_DEMO_SCENARIO: synthetic (planted follow-ups) or live (the live-commerce simulator, with the catalog topic, a burst and online evaluation)")
    demo_keep_stack: bool = Field(False, description="ATTNREC_DEMO_KEEP_STACK: leave Kafka and Redis running afterwards")

    # --- attnrec train / eval ------------------------------------------------------------------
    data: Path | None = Field(None, description="ATTNREC_DATA: dataset: a file, a gsasrec split directory, or a directory of *.jsonl events")
    data_format: Literal["s3", "gsasrec", "events"] = Field("events", description="ATTNREC_DATA_FORMAT: s3, gsasrec or events")
    train_out: Path | None = Field(None, description="ATTNREC_TRAIN_OUT: checkpoint directory to write")
    train_threads: int = Field(2, ge=1, description="ATTNREC_TRAIN_THREADS: torch intra-op threads")
    train_seed: int = Field(42, description="ATTNREC_TRAIN_SEED: random seed")
    quiet: bool = Field(False, description="ATTNREC_QUIET: no progress bars")
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

    # --- attnrec bench -------------------------------------------------------------------------
    bench_rate: str = Field("1000", description="ATTNREC_BENCH_RATE: offered events/s, or max (closed loop)")
    bench_duration: float = Field(10.0, gt=0, description="ATTNREC_BENCH_DURATION: measured seconds per run")
    bench_warmup: float = Field(2.0, ge=0, description="ATTNREC_BENCH_WARMUP: unmeasured seconds first")
    bench_repeats: int = Field(1, ge=1, description="ATTNREC_BENCH_REPEATS: runs per figure (median, min, max); a sweep runs at least 3")
    bench_users: int = Field(2000, ge=1, description="ATTNREC_BENCH_USERS: distinct users, buffers pre-filled")
    bench_max_inflight: int = Field(2000, ge=1, description="ATTNREC_BENCH_MAX_INFLIGHT: events unanswered at most at rate max (the closed loop's bound)")
    bench_drain_timeout: float = Field(120.0, gt=0, description="ATTNREC_BENCH_DRAIN_TIMEOUT: max wait for late recs; stops earlier after 15 s without progress")
    bench_prefill: int = Field(-1, ge=-1, description="ATTNREC_BENCH_PREFILL: entries pre-filled per user buffer; -1 = BUFFER_LEN (steady state)")
    bench_catalog: int = Field(12_000, ge=10, description="ATTNREC_BENCH_CATALOG: items of the random-weight model")
    bench_max_len: int = Field(50, ge=1, description="ATTNREC_BENCH_MAX_LEN: max_len of the random-weight model")
    bench_d_model: int = Field(64, ge=1, description="ATTNREC_BENCH_D_MODEL: width of the random-weight model")
    bench_blocks: int = Field(2, ge=1, description="ATTNREC_BENCH_BLOCKS: blocks of the random-weight model")
    bench_positions: Literal["relative", "absolute"] = Field("relative", description="ATTNREC_BENCH_POSITIONS: the random-weight model: relative (incremental, scored from per-user caches: the product's default) or absolute (a window model, recomputed whole per event)")
    bench_model: Literal["random", "registry"] = Field("random", description="ATTNREC_BENCH_MODEL: random (a cached random-weight model of CATALOG x MAX_LEN) or registry (the promoted model)")
    bench_baselines: bool = Field(False, description="ATTNREC_BENCH_BASELINES: also run, in the same run at the same rate, one event at a time (B=1), the torch-eager scorer and the null agent (the framework alone: no Redis, no model), with the ratios")
    bench_baseline_set: str = Field("b1,torch,null", pattern=r"^(b1|torch|null|guarantee|shadow)(,(b1|torch|null|guarantee|shadow))*$", description="ATTNREC_BENCH_BASELINE_SET: which baselines BASELINES runs, comma-separated: b1 (one event at a time), torch (the torch-eager scorer), null (the null agent), guarantee (the worker with the other processing guarantee), shadow (the worker shadow-scoring a second model of the same shape, SHADOW_FRACTION of batches)")
    bench_agent: Literal["worker", "null"] = Field("worker", description="ATTNREC_BENCH_AGENT: what is measured: the worker, or the null agent alone (the framework's floor: no Redis, no model)")
    bench_generator_linger_ms: int = Field(1, ge=0, description="ATTNREC_BENCH_GENERATOR_LINGER_MS: linger of the load generator's producer at a paced rate (rate max: 5 ms); part of every measured latency, the null agent's too")
    bench_warm: bool = Field(True, description="ATTNREC_BENCH_WARM: before measuring, one event per user, so an incremental model's worker holds every user's cache (a serving worker's steady state)")
    bench_drain: int = Field(0, ge=0, description="ATTNREC_BENCH_DRAIN: also drain a backlog of this many events through the worker and the null agent, one after the other, per repeat (0 = no drain)")
    bench_no_worker: bool = Field(False, description="ATTNREC_BENCH_NO_WORKER: measure a running worker on the settings' topics")
    bench_metrics_url: str | None = Field(None, description="ATTNREC_BENCH_METRICS_URL: with NO_WORKER, its /metrics URL")
    bench_worker_pid: int | None = Field(None, ge=1, description="ATTNREC_BENCH_WORKER_PID: with NO_WORKER, its pid for CPU and RSS")
    bench_worker_src: Path | None = Field(None, description="ATTNREC_BENCH_WORKER_SRC: run the worker from this source tree (e.g. a git archive of another commit)")
    bench_start_stack: bool = Field(False, description="ATTNREC_BENCH_START_STACK: start the local stack (and stop it after)")
    bench_generator_only: bool = Field(False, description="ATTNREC_BENCH_GENERATOR_ONLY: measure the load generator alone")
    bench_sweep: bool = Field(False, description="ATTNREC_BENCH_SWEEP: the make-bench matrix of shapes, rates and baselines")
    bench_sweep_shapes: str | None = Field(None, description="ATTNREC_BENCH_SWEEP_SHAPES: sweep only these ITEMSxL, e.g. 3000x50,100000x50")
    bench_sweep_ladder: str = Field("100,300,1000,2000,3000,max", description="ATTNREC_BENCH_SWEEP_LADDER: offered rates of the key shape")
    bench_sweep_short_ladder: str = Field("1000,max", description="ATTNREC_BENCH_SWEEP_SHORT_LADDER: offered rates of the baselines and other shapes")
    bench_no_md: bool = Field(False, description="ATTNREC_BENCH_NO_MD: a sweep leaves docs/BENCHMARKS.md alone")
    bench_shapes_only: bool = Field(False, description="ATTNREC_BENCH_SHAPES_ONLY: sweep only the SWEEP_SHAPES other than the key shape")
    bench_stages_only: bool = Field(False, description="ATTNREC_BENCH_STAGES_ONLY: sweep only the in-process stage profiles")
    bench_no_stages: bool = Field(False, description="ATTNREC_BENCH_NO_STAGES: skip the in-process stage profiles")
    bench_no_baselines_in_sweep: bool = Field(False, description="ATTNREC_BENCH_NO_BASELINES_IN_SWEEP: a sweep without the B=1 and torch baselines")
    bench_out_dir: Path = Field(Path("docs/bench"), description="ATTNREC_BENCH_OUT_DIR: where a sweep writes its JSON and plot")
    bench_md: Path = Field(Path("docs/BENCHMARKS.md"), description="ATTNREC_BENCH_MD: the document a sweep updates")
    bench_cache: Path | None = Field(None, description="ATTNREC_BENCH_CACHE: random-weight models and worker logs (default HOME/bench)")
    bench_keep_state: bool = Field(False, description="ATTNREC_BENCH_KEEP_STATE: keep the bench users' Redis keys")
    bench_json: Path | None = Field(None, description="ATTNREC_BENCH_JSON: write the report here")
    bench_render: list[Path] | None = Field(None, description="ATTNREC_BENCH_RENDER: re-render the plot and the BENCHMARKS.md section from these sweep JSONs")
    bench_render_key: Path | None = Field(None, description="ATTNREC_BENCH_RENDER_KEY: with RENDER, a later sweep JSON shown as the key figures")
