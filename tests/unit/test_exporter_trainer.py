"""Periodic trainer without Kafka: event log -> retrain -> export -> gated promote."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from attnrec.errors import ConfigError
from attnrec.registry import Registry
from attnrec.settings import Settings, load_settings, parse_duration
from exporter.trainer import run_cycle, write_event_file


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600.0), ("30s", 30.0), ("1.5h", 5400.0), ("250ms", 0.25),
                                               ("45", 45.0), (12, 12.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="duration such as 30s, 10m or 1h, got 'soon'"):
        parse_duration("soon")
    with pytest.raises(ConfigError, match="ATTNREC_TRAINER_EVERY='soon': expected a duration"):
        load_settings(trainer_every="soon")


def test_write_event_file_is_atomic_and_skips_empty(tmp_path: Path) -> None:
    assert write_event_file(tmp_path / "ev", []) is None
    path = write_event_file(tmp_path / "ev", [b'{"a": 1}', b'{"b": 2}\n'])
    assert path is not None and path.suffix == ".jsonl" and path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert [p.name for p in (tmp_path / "ev").iterdir()] == [path.name]  # no temp file left


def test_cycles_train_export_promote_and_skip(tmp_path: Path) -> None:
    from training.synth import generate

    cfg = Settings(registry=tmp_path / "registry", home=tmp_path, trainer_epochs=2, min_new_events=100)
    events = [orjson.dumps(e.to_dict()) for e in generate(40, 30, 1500, seed=3)]
    write_event_file(cfg.event_log, events[:1000])
    first = run_cycle(cfg, archive=False)
    reg = Registry(cfg.registry_dir)
    assert first["decision"] == "promoted" and reg.current_version() == first["version"]
    assert first["new_events"] == 1000 and first["train"]["items"] <= 30

    skipped = run_cycle(cfg, archive=False)
    assert skipped["decision"] == "skipped" and "0 new events" in skipped["reason"]

    write_event_file(cfg.event_log, events[1000:])
    second = run_cycle(cfg, archive=False)
    assert second["new_events"] == 500 and second["decision"] in ("promoted", "rejected")
    assert first["train"]["warm_start"] is False and second["train"]["warm_start"] is True
    assert second["figures"]["current"] == first["version"]
    manifest = reg.read_manifest(second["version"])
    assert manifest["parent"] == first["version"] and manifest["parity"]["passed"]
    # the grown vocabulary keeps the first model's item order
    items_1 = json.loads((reg.version_dir(first["version"]) / "items.json").read_text())
    items_2 = json.loads((reg.version_dir(second["version"]) / "items.json").read_text())
    assert items_2[: len(items_1)] == items_1
    cycles = [json.loads(line) for line in (tmp_path / "trainer" / "cycles.jsonl").read_text().splitlines()]
    assert [c["decision"] for c in cycles][:2] == ["promoted", "skipped"]
