"""The periodic trainer against the real local Kafka: archive durably, commit, retrain, promote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from attnrec.exporter.archive import archive_from_kafka
from attnrec.exporter.settings import TrainerSettings
from attnrec.exporter.trainer import run_cycle

from attnrec.kafka_util import ensure_topics
from attnrec.registry import Registry
from tests.feeding import Feeder, Raw
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


def _archived_ids(events_dir: Path) -> list[str]:
    return [json.loads(line)["event_id"] for f in sorted(events_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_archive_commits_only_after_the_file_and_cycle_promotes(stack: Any, names: dict[str, str], tmp_path: Path) -> None:
    from attnrec.training.sim.synth import generate

    s = settings_for(stack, names, tmp_path / "registry")
    ensure_topics(s)
    cfg = TrainerSettings.from_settings(s, home=tmp_path, trainer_group=f"{s.group_id}-trainer", trainer_epochs=2,
                                        min_new_events=100)
    events = list(generate(60, 40, 3000, seed=5))
    with Feeder(s) as feeder:
        feeder.send_all([*events[:2000], *(Raw(b"{not json %d" % i, key=b"bad") for i in range(3))])

    first = archive_from_kafka(cfg)
    assert first["archived"] == 2000 and first["invalid"] == 3
    assert sorted(_archived_ids(cfg.event_log)) == sorted(e.event_id for e in events[:2000])
    again = archive_from_kafka(cfg)  # offsets were committed: nothing is archived twice
    assert again["archived"] == 0 and again["file"] is None

    # forced: a first model serves whether or not 2 epochs on 60 users beat the popularity fallback
    # (which a first model must): "forced" when they do not, "promoted" when they do
    cycle = run_cycle(cfg.model_copy(update={"force": True}), archive=False)
    assert cycle["decision"] in ("forced", "promoted"), cycle
    assert Registry(cfg.registry_dir).current_version() == cycle["version"]

    with Feeder(s) as feeder:
        feeder.send_all(events[2000:])
    second = run_cycle(cfg)  # archive + retrain + export + gate in one pass
    assert second["archive"]["archived"] == 1000 and second["new_events"] == 1000
    assert second["decision"] in ("promoted", "rejected") and second["figures"]["current"] == cycle["version"]
    assert sorted(_archived_ids(cfg.event_log)) == sorted(e.event_id for e in events)


def test_trainer_command_shadows_a_new_model_and_promotes_it_on_the_workers_online_figures(
        stack: Any, names: dict[str, str], tmp_path: Path) -> None:
    """``attnrec trainer --once --rollout shadow`` as deployed: a subprocess that archives from the
    real Kafka and reads the online figures from the real Redis (the hash the workers write,
    ``{online}:<policy>``; written here as a worker's flush would)."""
    import subprocess
    import sys

    from attnrec.stream.stages.online import ONLINE_KEY
    from attnrec.stream.stages.policy import Policy
    from attnrec.training.sim.synth import generate

    from attnrec.redis_util import redis_sync
    from tests.helpers import env_for

    s = settings_for(stack, names, tmp_path / "registry", TrainerSettings, trainer_group=f"{names['group_id']}-trainer", trainer_epochs=2,
                     min_new_events=100, trainer_rollout="shadow", margin=0.95, online_margin=0.05, online_min_events=300,
                     policy_name=f"p{tmp_path.name}"[:40])
    ensure_topics(s)
    env = env_for(s, tmp_path)
    reg = Registry(s.registry_dir)
    events = list(generate(60, 40, 3000, seed=5))

    def trainer(batch: list[Any], *flags: str) -> dict[str, Any]:
        if batch:
            with Feeder(s) as feeder:
                feeder.send_all(batch)
        run = subprocess.run([sys.executable, "-m", "attnrec.apps", "trainer", "--once", *flags], env=env, capture_output=True,
                             text=True, timeout=600)
        assert run.returncode == 0, run.stderr[-3000:]
        return json.loads((tmp_path / "trainer" / "cycles.jsonl").read_text().splitlines()[-1])

    # no serving model yet: nothing to compare online (--force: the first model serves whether or not
    # 2 epochs on 60 users beat the popularity fallback on validation, which a first model must)
    first = trainer(events[:2000], "--force")
    assert first["decision"] in ("forced", "promoted"), first
    second = trainer(events[2000:])
    cand = second["version"]
    assert second["decision"] == "shadow" and reg.shadow_version() == cand and reg.current_version() == first["version"]
    assert trainer([])["rollout"] == {"version": cand, "decision": "waiting", "events": 0, "min_events": 300}
    r = redis_sync(s)
    key = ONLINE_KEY + Policy.from_settings(s).name
    r.hset(key, mapping={f"shadow|{cand}|n": 400, f"shadow|{cand}|hits": 120, f"shadow|{cand}|ndcg": 60.0,
                         f"shadow-base|{cand}|n": 400, f"shadow-base|{cand}|hits": 100, f"shadow-base|{cand}|ndcg": 50.0})
    decided = trainer([])
    assert decided["rollout"]["decision"] == "promoted", decided
    assert "online ndcg@10 0.15000 >= 0.13125" in decided["rollout"]["reason"]
    assert reg.current_version() == cand and reg.shadow_version() is None
