"""The periodic trainer against the real local Kafka: archive durably, commit, retrain, promote."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attnrec.kafka_util import ensure_topics
from attnrec.registry import Registry
from exporter.trainer import archive_from_kafka, run_cycle
from tests.feeding import Feeder, Raw
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


def _archived_ids(events_dir: Path) -> list[str]:
    return [json.loads(line)["event_id"] for f in sorted(events_dir.glob("*.jsonl")) for line in f.read_text().splitlines()]


def test_archive_commits_only_after_the_file_and_cycle_promotes(stack: Any, names: dict[str, str], tmp_path: Path) -> None:
    from training.synth import generate

    s = settings_for(stack, names, tmp_path / "registry")
    ensure_topics(s)
    cfg = s.model_copy(update={"home": tmp_path, "trainer_group": f"{s.group_id}-trainer", "trainer_epochs": 2,
                               "min_new_events": 100})
    events = list(generate(60, 40, 3000, seed=5))
    with Feeder(s) as feeder:
        feeder.send_all([*events[:2000], *(Raw(b"{not json %d" % i, key=b"bad") for i in range(3))])

    first = archive_from_kafka(cfg)
    assert first["archived"] == 2000 and first["invalid"] == 3
    assert sorted(_archived_ids(cfg.event_log)) == sorted(e.event_id for e in events[:2000])
    again = archive_from_kafka(cfg)  # offsets were committed: nothing is archived twice
    assert again["archived"] == 0 and again["file"] is None

    cycle = run_cycle(cfg, archive=False)
    assert cycle["decision"] == "promoted" and Registry(cfg.registry_dir).current_version() == cycle["version"]

    with Feeder(s) as feeder:
        feeder.send_all(events[2000:])
    second = run_cycle(cfg)  # archive + retrain + export + gate in one pass
    assert second["archive"]["archived"] == 1000 and second["new_events"] == 1000
    assert second["decision"] in ("promoted", "rejected") and second["figures"]["current"] == cycle["version"]
    assert sorted(_archived_ids(cfg.event_log)) == sorted(e.event_id for e in events)
