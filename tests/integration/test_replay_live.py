"""``attnrec replay --scenario live`` against the real stack: clicks keyed by user to the clicks
topic, catalog events keyed by item to the catalog topic, every event once, paced by its ts."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.apps.cli import main
from attnrec.training.sim.live import generate_live

from attnrec.events import CatalogEvent, ClickEvent, parse_catalog_event, parse_event
from attnrec.kafka_util import make_consumer
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


def read_all(s: Any, topic: str, want: int, timeout: float = 30.0) -> list[Any]:
    c = make_consumer(s, topic, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200, max_records=5000).values():
                out.extend(recs)
        for recs in c.poll(timeout_ms=500).values():  # nothing more than expected
            out.extend(recs)
    finally:
        c.close()
    return out


def test_replay_live_to_both_topics(stack: Any, names: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    catalog_topic = "catalog-" + names["clicks_topic"].removeprefix("clicks-")
    s = settings_for(stack, names, tmp_path / "registry", catalog_topic=catalog_topic, home=tmp_path)
    for k, v in {"KAFKA_BOOTSTRAP": s.kafka_bootstrap, "REDIS_URL": s.redis_url, "HOME": str(tmp_path), "PARTITIONS": "4", "QUIET": "true",
                 "CATALOG_TOPIC": catalog_topic, **{k.upper(): v for k, v in names.items()}}.items():  # fmt: skip
        monkeypatch.setenv(f"ATTNREC_{k}", v)
    count, rate = 2000, 1000
    burst = dict(burst_at_s=0.5, burst_s=0.5, burst_factor=4)
    expected = list(generate_live(count, seed=5, rate=rate, **burst))
    n_cat = sum(isinstance(e, CatalogEvent) for e in expected)
    span_s = (expected[-1].ts - expected[0].ts) / 1000

    t0 = time.monotonic()
    rc = main(["replay", "--scenario", "live", "--count", str(count), "--rate", str(rate), "--seed", "5",
               "--burst-at", "0.5", "--burst-s", "0.5", "--burst-factor", "4"])  # fmt: skip
    took = time.monotonic() - t0
    assert rc == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out == {"produced": count, "catalog": n_cat, "topic": names["clicks_topic"], "catalog_topic": catalog_topic}
    assert took >= 0.9 * span_s, f"not paced: {took:.2f}s for a {span_s:.2f}s schedule"

    clicks = read_all(s, names["clicks_topic"], count)
    cats = read_all(s, catalog_topic, n_cat)
    assert len(clicks) == count and len(cats) == n_cat
    for m in clicks:
        ev = parse_event(m.value)
        assert m.key == ev.user_id.encode()
    for m in cats:
        ev = parse_catalog_event(m.value)
        assert m.key == ev.item_id.encode()
    # every event once, re-stamped with its gaps kept
    sent = {orjson.loads(m.value)["event_id"]: orjson.loads(m.value)["ts"] for m in [*clicks, *cats]}
    assert set(sent) == {e.event_id for e in expected}
    first = min(sent.values())
    assert abs(first / 1000 - time.time()) < 120  # the first event is stamped "now"
    assert all(sent[e.event_id] - first == e.ts - expected[0].ts for e in expected)
    assert sum(isinstance(e, ClickEvent) for e in expected) == count
