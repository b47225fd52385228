"""`attnrec bench` end to end for a few seconds at a low rate against the test stack."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from apps.cli import main as cli_main

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
