"""``attnrec demo --scenario live`` end to end on a small world (its own stack on free ports):
the worker's online evaluation ranks the trained model above trending now on the planted
behaviour, the burst drains, and no recommendation holds an item unavailable for more than 1 s."""

from __future__ import annotations

from pathlib import Path

import pytest
from attnrec.apps.demo_live import Sizes, live_demo
from attnrec.apps.settings import DemoSettings
from attnrec.apps.stack import free_port

pytestmark = pytest.mark.integration


@pytest.mark.timeout(420)
def test_live_demo_on_a_small_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kafka, controller, redis = free_port(), free_port(), free_port()
    s = DemoSettings(home=tmp_path, kafka_port=kafka, kafka_controller_port=controller, redis_port=redis,
                     kafka_bootstrap=f"127.0.0.1:{kafka}", redis_url=f"redis://127.0.0.1:{redis}/0", demo_train_seconds=25)
    out = live_demo(s, Sizes(n_train=12_000, pre_s=8, burst_s=10, post_s=8, burst_factor=5))
    printed = capsys.readouterr().out
    print(printed[-3000:])
    assert out["recs"] > 0 and out["duplicates"] == 0 and out["missing"] == 0 and out["users"] > 50
    assert out["late"] == 0 and out["checked"] > 1000
    assert out["in_flight"] <= 0.01 * out["checked"]
    assert out["model_over_trending"] is not None and out["model_over_trending"] >= 1.5, out
    assert out["lag_back_s"] is not None, out
    for source in ("model", "trending", "static"):
        assert any(k.startswith(source + "|") and v["events"] > 100 for k, v in out["online"].items()), out["online"]
    assert "online, the user's next choice in the top-10" in printed and "availability" in printed
