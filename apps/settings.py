"""The settings of the commands in ``apps/`` that are one module each: ``attnrec replay`` and
``attnrec demo`` and ``attnrec replay-check`` (the local stack's, the benchmark's and the dashboard's live in their packages)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from attnrec.settings import Settings
from attnrec.units import parse_rate

from ..training.settings import PrequentialSettings
from .stack.settings import StackSettings

__all__ = ["ReplaySettings", "DemoSettings", "ReplayCheckSettings"]


class ReplaySettings(Settings):
    """The base settings plus what ``attnrec replay`` sends, how fast and where."""

    sections: ClassVar[dict[str, str]] = {"replay_data": "Replay (`attnrec replay`)"}

    replay_data: Path | None = Field(None, description="ATTNREC_REPLAY_DATA: a file of click events (JSONL/CSV of our schema) or an event log (a file, or a directory of its files: REPLAY_FORMAT)")
    replay_format: Literal["auto", "events", "yoochoose", "taobao", "diginetica", "table"] = Field("auto", description="ATTNREC_REPLAY_FORMAT: the file's format: events (our schema), yoochoose (session-rec TSV or the challenge's .dat), taobao (UserBehavior CSV), diginetica (item views), table (any CSV/JSONL with REPLAY_COLUMNS); auto: a DIGINETICA header, else events")
    replay_columns: str | None = Field(None, description="ATTNREC_REPLAY_COLUMNS: format table: user=COL (or session=COL),item=COL,time=COL[,type=COL][,category=COL]; column numbers from 0 for a CSV without a header")
    replay_types: str | None = Field(None, description="ATTNREC_REPLAY_TYPES: the log's event types as ours, VALUE=TYPE,... (pv=view,fav=like,buy=purchase; *=TYPE for the rest; TYPE drop leaves the rows out)")
    replay_time_unit: Literal["auto", "s", "ms", "iso"] = Field("auto", description="ATTNREC_REPLAY_TIME_UNIT: format table: unix seconds, milliseconds or ISO 8601 (auto: numbers below 10^11 are seconds, text ISO 8601)")
    replay_order: Literal["time", "file"] = Field("time", description="ATTNREC_REPLAY_ORDER: time: the events sorted by time, as they happened (the file is read whole first); file: in the file's order, streamed")
    replay_synthetic: bool = Field(False, description="ATTNREC_REPLAY_SYNTHETIC: synthetic events with planted structure instead of a file")
    replay_rate: str = Field("1000", description="ATTNREC_REPLAY_RATE: events/s, or max")
    replay_count: int = Field(10_000, ge=0, description="ATTNREC_REPLAY_COUNT: events to send (0 = the whole file)")
    replay_seed: int = Field(7, description="ATTNREC_REPLAY_SEED: seed of the synthetic events")
    replay_scenario: Literal["live"] | None = Field(None, description="ATTNREC_REPLAY_SCENARIO: live: the live-commerce simulator (rooms, products, stock, bursts) to the clicks and catalog topics")
    replay_burst_at_s: float | None = Field(None, ge=0, description="ATTNREC_REPLAY_BURST_AT_S: live scenario: a burst starts this many seconds in (unset: none)")
    replay_burst_s: float = Field(60.0, gt=0, description="ATTNREC_REPLAY_BURST_S: live scenario: the burst's length")
    replay_burst_factor: float = Field(10.0, ge=1, description="ATTNREC_REPLAY_BURST_FACTOR: live scenario: the burst's rate over the base rate")
    replay_topic: str | None = Field(None, description="ATTNREC_REPLAY_TOPIC: target topic (default CLICKS_TOPIC)")

    @field_validator("replay_rate")
    @classmethod
    def _rate(cls, v: str) -> str:
        parse_rate(v)
        return v.strip().lower()


class DemoSettings(StackSettings):
    """The local stack's settings plus the demo's; the demo builds the training and trainer
    settings it needs from these (``from_settings``), so ``ATTNREC_TRAIN_*`` still apply."""

    sections: ClassVar[dict[str, str]] = {"demo_events": "Demo (`attnrec demo`)"}

    kafka_jit: Literal["full", "quick"] = Field(
        "quick", description="ATTNREC_KAFKA_JIT: the demo's broker: quick by default (a broker that lives two minutes never finishes compiling with the optimising tier: make demo's p99 at 500 events/s was 429-497 ms with quick, 763-1,075 with full)"
    )
    demo_events: int = Field(6000, ge=100, description="ATTNREC_DEMO_EVENTS: events replayed live")
    demo_rate: float = Field(500.0, gt=0, description="ATTNREC_DEMO_RATE: replay rate, events/s")
    demo_warmup_s: float = Field(3.0, ge=0, description="ATTNREC_DEMO_WARMUP_S: seconds of traffic at RATE from users of their own before the replay, answered but not in the reported latency (a broker, worker and Redis started a minute earlier answer their first seconds slower; the summary reports that cold start apart); 0: none")
    demo_train_seconds: float = Field(60.0, gt=0, description="ATTNREC_DEMO_TRAIN_SECONDS: training budget of each model")
    demo_scenario: Literal["synthetic", "live"] = Field("synthetic", description="ATTNREC_DEMO_SCENARIO: synthetic (planted follow-ups) or live (the live-commerce simulator, with the catalog topic, a burst and online evaluation)")
    demo_keep_stack: bool = Field(False, description="ATTNREC_DEMO_KEEP_STACK: leave Kafka and Redis running afterwards")


class ReplayCheckSettings(PrequentialSettings):
    """The prequential settings (the log, ``--start``, ``--every``, the epochs, the gate's margin)
    plus the replay's; the worker's policy is the base settings' (``EXCLUDE_SEEN``,
    ``EXCLUDE_WINDOW``, ``TRENDING_WINDOW_S``), which the offline side mirrors."""

    sections: ClassVar[dict[str, str]] = {"check_tolerance": "Served path against the evaluation (`attnrec replay-check`)"}

    check_tolerance: float = Field(0.01, gt=0, lt=1, description="ATTNREC_CHECK_TOLERANCE: the largest difference in HR@10 and NDCG@10 (absolute) allowed between a source's online figure and the offline one")
    check_json: Path | None = Field(None, description="ATTNREC_CHECK_JSON: write the report (both sides, differences, verdict) here")
    check_keep: bool = Field(False, description="ATTNREC_CHECK_KEEP: keep the run's directory (registry, event log, worker log) under HOME/replay-check")
