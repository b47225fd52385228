"""The benchmark's settings (``attnrec bench``): every ``bench_*`` field is a flag of the command
(``--rate`` for ``bench_rate``, ...; ``bench_md`` is ``--benchmarks-md``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from attnrec.units import parse_rate

from ..stack.settings import StackSettings

__all__ = ["BenchSettings"]


class BenchSettings(StackSettings):
    """The local stack's settings (``bench_start_stack`` starts it) plus the benchmark's; the
    worker under test gets the base settings only (:func:`attnrec.apps.bench.worker.settings_env`)."""

    sections: ClassVar[dict[str, str]] = {"bench_rate": "Benchmark (`attnrec bench`)"}

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
    bench_baseline_set: str = Field("b1,torch,null", pattern=r"^(b1|torch|null|plain|guarantee|shadow)(,(b1|torch|null|plain|guarantee|shadow))*$", description="ATTNREC_BENCH_BASELINE_SET: which baselines BASELINES runs, comma-separated: b1 (one event at a time), torch (the torch-eager scorer), null (the null agent: faust and our output, no Redis, no model), plain (a plain aiokafka consume-produce loop, no faust: the framework's own cost is null minus plain), guarantee (the worker with the other processing guarantee), shadow (the worker shadow-scoring a second model of the same shape, SHADOW_FRACTION of batches)")
    bench_agent: Literal["worker", "null", "plain"] = Field("worker", description="ATTNREC_BENCH_AGENT: what is measured: the worker, the null agent alone (the framework's floor: no Redis, no model) or the plain aiokafka loop (no faust)")
    bench_generator_linger_ms: int = Field(1, ge=0, description="ATTNREC_BENCH_GENERATOR_LINGER_MS: linger of the load generator's producer at a paced rate (rate max: 5 ms); part of every measured latency, the null agent's too")
    bench_warm: bool = Field(True, description="ATTNREC_BENCH_WARM: before measuring, one event per user, so an incremental model's worker holds every user's cache (a serving worker's steady state)")
    bench_warm_round: bool = Field(True, description="ATTNREC_BENCH_WARM_ROUND: one unmeasured round of every variant before the measured repeats, at the same rate for up to 10 s each (a fresh stack's broker is still compiling: the first measured repeat ran 2-10x slower)")
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

    @field_validator("bench_rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v.strip().lower()

    @field_validator("bench_sweep_ladder", "bench_sweep_short_ladder")
    @classmethod
    def _ladder(cls, v: str) -> str:
        for x in v.split(","):
            parse_rate(x)
        return v

    @field_validator("bench_sweep_shapes")
    @classmethod
    def _shapes(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"\s*\d+[xX]\d+\s*(,\s*\d+[xX]\d+\s*)*", v):
            raise ValueError("expected ITEMSxL[,ITEMSxL], e.g. 3000x50,100000x50")
        return v

    @property
    def bench_cache_dir(self) -> Path:
        return self.bench_cache if self.bench_cache is not None else self.home / "bench"
