"""Periodic trainer without Kafka: event log -> retrain -> export -> gated promote."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest
from attnrec.exporter.archive import write_event_file
from attnrec.exporter.settings import TrainerSettings
from attnrec.exporter.trainer import run_cycle

from attnrec.errors import ConfigError
from attnrec.registry import Registry
from attnrec.settings import load_settings, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("10m", 600.0), ("30s", 30.0), ("1.5h", 5400.0), ("250ms", 0.25),
                                               ("45", 45.0), (12, 12.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


def test_parse_duration_rejects_garbage() -> None:
    with pytest.raises(ValueError, match="duration such as 30s, 10m or 1h, got 'soon'"):
        parse_duration("soon")
    with pytest.raises(ConfigError, match="ATTNREC_TRAINER_EVERY='soon': expected a duration"):
        load_settings(TrainerSettings, trainer_every="soon")


def test_write_event_file_is_atomic_and_skips_empty(tmp_path: Path) -> None:
    assert write_event_file(tmp_path / "ev", []) is None
    path = write_event_file(tmp_path / "ev", [b'{"a": 1}', b'{"b": 2}\n'])
    assert path is not None and path.suffix == ".jsonl" and path.read_bytes() == b'{"a": 1}\n{"b": 2}\n'
    assert [p.name for p in (tmp_path / "ev").iterdir()] == [path.name]  # no temp file left


def test_cycles_train_export_promote_and_skip(tmp_path: Path) -> None:
    from attnrec.training.sim.synth import generate

    cfg = TrainerSettings(registry=tmp_path / "registry", home=tmp_path, trainer_epochs=2, min_new_events=100)
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


def test_shadow_rollout_shadows_a_new_model_and_promotes_or_rejects_it_on_the_online_gate(tmp_path: Path) -> None:
    """TRAINER_ROLLOUT=shadow: the first model serves at once; a later one is shadow-scored, the
    trainer waits (no retraining) until the online gate has its events, then promotes it or
    rejects it; shadowing stops either way, and an operator's change takes it out of its hands.
    ``online`` is the workers' shadow comparison as ``attnrec models shadow --json`` shows it."""
    from attnrec.training.sim.synth import generate

    cfg = TrainerSettings(registry=tmp_path / "registry", home=tmp_path, trainer_epochs=2, min_new_events=100,
                   trainer_rollout="shadow", online_min_events=500, online_margin=0.05,
                   margin=0.95)  # the offline gate out of the way: 40 users make its figures noise
    reg = Registry(cfg.registry_dir)
    figures: dict[str, dict[str, object]] = {}
    events = [orjson.dumps(e.to_dict()) for e in generate(40, 30, 2400, seed=3)]

    def cycle(part: slice | None, s: TrainerSettings = cfg) -> dict[str, object]:
        if part is not None:
            write_event_file(cfg.event_log, events[part])
        return run_cycle(s, archive=False, online=figures.get)

    # the first model serves at once (nothing to compare online); forced: 2 epochs on 40 users do
    # not beat the popularity fallback on validation, which a first model must
    first = cycle(slice(0, 1000), cfg.model_copy(update={"force": True}))
    assert first["decision"] == "forced" and reg.current_version() == first["version"]
    second = cycle(slice(1000, 1400))
    v2 = second["version"]
    assert second["decision"] == "shadow" and reg.shadow_version() == v2 and reg.current_version() == first["version"]
    waiting = cycle(slice(1400, 1800))  # 400 new events, but v2 has no online figures yet: no retraining
    assert waiting["decision"] == "waiting" and "train" not in waiting and waiting["rollout"]["events"] == 0
    figures[v2] = {"version": v2, "events": 499, "shadow_ndcg@10": 0.30, "serving_ndcg@10": 0.20}
    assert cycle(None)["rollout"] == {"version": v2, "decision": "waiting", "events": 499, "min_events": 500}
    figures[v2]["events"] = 800  # +50 % online, the gate wants +5 %: promoted; the new events then train v3
    decided = cycle(None)
    assert decided["rollout"]["decision"] == "promoted" and reg.current_version() == v2
    assert decided["decision"] == "shadow" and reg.shadow_version() == decided["version"] != v2, (decided["reason"], decided["figures"])
    v3 = decided["version"]
    figures[v3] = {"version": v3, "events": 900, "shadow_ndcg@10": 0.20, "serving_ndcg@10": 0.20}  # no better
    rejected = cycle(None)
    assert rejected["rollout"]["decision"] == "rejected" and "online ndcg@10 0.20000 < 0.21000" in rejected["rollout"]["reason"]
    assert reg.current_version() == v2 and reg.shadow_version() is None and rejected["decision"] == "skipped"
    hist = reg.history()
    assert [h["decision"] for h in hist if h["version"] == v3] == ["shadow", "rejected", "shadow-off"]
    assert hist[-2]["figures"]["online"]["events"] == 900  # the online figures are in the history
    # an operator takes over: the trainer forgets its candidate
    v4 = cycle(slice(1800, 2400))["version"]
    assert reg.shadow_version() == v4
    reg.set_shadow(None, reason="operator")
    assert cycle(None)["rollout"] == {"version": v4, "decision": "left to the operator"}
    assert reg.current_version() == v2


def test_a_warm_started_retrain_is_the_same_whatever_the_process_ran_before() -> None:
    """The new rows of a grown item table were drawn from whatever state the process' random
    generator was in: the trainer's retrain and the evaluation's of the same events and the same
    serving model gave different models."""
    import torch
    from attnrec.training.retrain import Previous, retrain_events
    from attnrec.training.sim.synth import generate

    evs = list(generate(40, 30, 1200, seed=3))
    later = sorted({e.item_id for e in evs})[:5]  # items the first model never saw
    first = retrain_events([e for e in evs[:800] if e.item_id not in later], "t", None, epochs=1)
    prev = Previous(first.model, {"model": first.model.cfg.to_dict()}, first.ds.vocab.to_dict())
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # what ran before in the process
        torch.rand(1000)
        out = retrain_events(evs, "t", prev, epochs=1)
        assert out.warm_start and out.ds.vocab.n_items > first.ds.vocab.n_items
        states.append(out.model.state_dict())
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
