"""`attnrec bench` end to end for a few seconds at a low rate against the test stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from attnrec.apps.cli import main as cli_main

pytestmark = pytest.mark.integration

DESIGN_FIELDS = {"events", "duration_s", "events_per_s", "offered_rate", "latency_ms", "catalog_items", "max_len",
                 "workers", "lost", "duplicates"}  # fmt: skip


def test_bench_json(stack: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTNREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTNREC_KAFKA_BOOTSTRAP", stack.bootstrap)
    monkeypatch.setenv("ATTNREC_REDIS_URL", stack.redis_url)
    monkeypatch.setenv("ATTNREC_PARTITIONS", "4")
    out = tmp_path / "bench.json"
    rc = cli_main([
        "bench", "--rate", "50", "--duration", "3", "--warmup", "0.5", "--users", "40", "--prefill", "20",
        "--catalog", "300", "--max-len", "20", "--d-model", "32", "--blocks", "1",
        "--cache", str(tmp_path / "cache"), "--drain-timeout", "30", "--quiet", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    rep = json.loads(out.read_text())
    assert DESIGN_FIELDS <= set(rep), DESIGN_FIELDS - set(rep)
    assert {"p50", "p95", "p99", "max"} <= set(rep["latency_ms"])
    assert rep["lost"] == 0 and rep["duplicates"] == 0, rep
    assert rep["catalog_items"] == 300 and rep["max_len"] == 20 and rep["workers"] == 1
    assert rep["events"] >= 60, rep  # ~3 s x 50/s measured
    assert rep["events_per_s"] > 0 and rep["offered_rate"] == 50
    lat = rep["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"], lat
    assert rep["fallback_recs"] == 0, "bench events must be scored by the model, not fall back"
    assert rep["worker_rss_mb"] and rep["worker_rss_mb"] > 0
    assert rep["redis_bytes_per_user"] and rep["redis_bytes_per_user"] > 0


def test_bench_baselines_null_agent_ratios_hops_and_drain(stack: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``--baselines`` measures the null agent (and B=1, torch) in the same run at the same rate;
    the report carries its figures, the ratios, the per-hop split and the backlog drains."""
    monkeypatch.setenv("ATTNREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("ATTNREC_KAFKA_BOOTSTRAP", stack.bootstrap)
    monkeypatch.setenv("ATTNREC_REDIS_URL", stack.redis_url)
    monkeypatch.setenv("ATTNREC_PARTITIONS", "4")
    out = tmp_path / "bench.json"
    rc = cli_main([
        "bench", "--rate", "40", "--duration", "2.5", "--warmup", "0.5", "--users", "40", "--prefill", "20",
        "--catalog", "300", "--max-len", "20", "--d-model", "32", "--blocks", "1", "--baselines", "--drain", "400",
        "--cache", str(tmp_path / "cache"), "--drain-timeout", "30", "--quiet", "--json", str(out),
    ])  # fmt: skip
    assert rc == 0
    rep = json.loads(out.read_text())
    agents = [(sm["agent"], sm.get("scorer"), sm.get("batch_size")) for sm in rep["summaries"]]
    assert [a for a, _, _ in agents] == ["worker", "worker", "worker", "null"], agents
    for sm in rep["summaries"]:
        assert sm["lost"] == 0 and sm["duplicates"] == 0, sm
        assert sm["events_per_s"]["median"] > 0
        assert 0 < sm["p50"]["median"] <= sm["p95"]["median"] <= sm["p99"]["median"] <= sm["max"]["median"], sm
        assert sm["batch_sizes"]["batches"] > 0 and abs(sum(sm["batch_sizes"]["share_by_le"].values()) - 1) < 1e-3
    null = rep["null_agent"]
    assert null["agent"] == "null" and null["cpu_us_per_event"]["worker"] > 0
    for k in ("p50", "p99", "events_per_s", "cpu_us_per_event"):
        assert rep["vs_null"][k]["median"] > 0, rep["vs_null"]
    hops = rep["summaries"][0]["hops_ms"]
    from attnrec.apps.bench.tracker import HOPS

    assert set(HOPS) | {"total"} <= set(hops), hops
    assert all(hops[h]["p50"] >= -1.0 for h in HOPS), hops  # clocks of one box: ms-precision stamps
    assert hops["total"]["p50"] > 0 and hops["parse_and_redis"]["p50"] > 0 and hops["inputs_and_model"]["p50"] > 0
    nh = rep["null_agent"]["hops_ms"]
    assert nh["parse_and_redis"]["p50"] == 0 and nh["inputs_and_model"]["p50"] == 0, nh  # no Redis, no model
    drain = rep["drain"]
    for agent in ("worker", "null"):
        assert drain[agent]["median"] > 0
    assert all(d["lost"] == 0 and d["covered"] == 400 for d in drain["runs"]), drain["runs"]
    assert drain["ratio"]["median"] > 0
