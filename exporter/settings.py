"""The settings of export, the registry commands and the periodic trainer (``attnrec export``,
``attnrec models ...``, ``attnrec trainer``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field, field_validator

from attnrec.settings import Settings
from attnrec.units import parse_duration

__all__ = ["ModelsSettings", "TrainerSettings"]


class ModelsSettings(Settings):
    """The base settings plus export's and the promotion gates' (``top_k`` is the worker's)."""

    sections: ClassVar[dict[str, str]] = {"checkpoint": "Export and the registry (`attnrec export`, `attnrec models`)"}

    checkpoint: Path | None = Field(None, description="ATTNREC_CHECKPOINT: training checkpoint directory to export")
    promote: bool = Field(False, description="ATTNREC_PROMOTE: promote through the NDCG@10 gate after publishing")
    force: bool = Field(False, description="ATTNREC_FORCE: promote even when the NDCG@10 gate says no")
    margin: float = Field(0.02, ge=0, lt=1, description="ATTNREC_MARGIN: largest tolerated relative drop of validation NDCG@10 at promotion")
    online_margin: float | None = Field(None, ge=-1, lt=10, description="ATTNREC_ONLINE_MARGIN: promotion also requires the version, shadow-scored, to beat the serving one's online NDCG@10 on the same triggers by this relative margin (unset: offline gate only)")
    shadow_off: bool = Field(False, description="ATTNREC_SHADOW_OFF: attnrec models shadow --off stops shadow scoring")
    online_min_events: int = Field(1000, ge=1, description="ATTNREC_ONLINE_MIN_EVENTS: next events the online gate needs before it decides")
    quantize: bool = Field(False, description="ATTNREC_QUANTIZE: try dynamic int8; kept only if faster here and < 1% relative NDCG@10 loss")
    models_json: bool = Field(False, description="ATTNREC_MODELS_JSON: attnrec models list prints versions and history as JSON")
    rollback_reason: str = Field("manual rollback", description="ATTNREC_ROLLBACK_REASON: recorded in HISTORY.jsonl by attnrec models rollback")


class TrainerSettings(ModelsSettings):
    """The export and gate settings plus the periodic trainer's own."""

    sections: ClassVar[dict[str, str]] = {"trainer_every": "Periodic trainer (`attnrec trainer`)"}

    trainer_every: str = Field("10m", description="ATTNREC_TRAINER_EVERY: time between cycles (30s, 10m, 1h, ...)")
    trainer_once: bool = Field(False, description="ATTNREC_TRAINER_ONCE: one cycle, then exit")
    events_dir: Path | None = Field(None, description="ATTNREC_EVENTS_DIR: event log directory (default HOME/events)")
    trainer_group: str = Field("attnrec-trainer", min_length=1, description="ATTNREC_TRAINER_GROUP: consumer group of the archiver")
    min_new_events: int = Field(100, ge=0, description="ATTNREC_MIN_NEW_EVENTS: retrain only after this many new events")
    trainer_epochs: int = Field(30, ge=1, description="ATTNREC_TRAINER_EPOCHS: max epochs per retrain")
    trainer_max_minutes: float = Field(5.0, gt=0, description="ATTNREC_TRAINER_MAX_MINUTES: training time budget per cycle")
    trainer_threads: int = Field(1, ge=1, description="ATTNREC_TRAINER_THREADS: torch threads (the trainer shares the box with the worker)")
    trainer_holdout: float = Field(0.0, ge=0, lt=1, description="ATTNREC_TRAINER_HOLDOUT: validate each retrain on the last event of this share of the users and train on everything else (0: leave-one-out, the last two events of every user held out)")
    trainer_min_item_support: int = Field(1, ge=1, description="ATTNREC_TRAINER_MIN_ITEM_SUPPORT: a new item joins the vocabulary once it has this many events (rarer ones read as unknown and are never recommended; the worker still records them)")
    trainer_rollout: Literal["promote", "shadow"] = Field("promote", description="ATTNREC_TRAINER_ROLLOUT: promote (a new model that passes the offline gate serves at once) or shadow (it is shadow-scored first, and a later cycle promotes it once the online gate has ONLINE_MIN_EVENTS events: ONLINE_MARGIN, 0 when unset)")

    @field_validator("trainer_every")
    @classmethod
    def _every(cls, v: str) -> str:
        if parse_duration(v) <= 0:
            raise ValueError("expected a positive duration")
        return v

    @property
    def event_log(self) -> Path:
        return self.events_dir if self.events_dir is not None else self.home / "events"
