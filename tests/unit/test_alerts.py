"""The alerting rules shipped for Prometheus (deploy/compose/alerts.yml): valid, loaded by the
compose stack's Prometheus, and each alert fires on a synthetic series made to fire it and stays
quiet on one made not to (``promtool test rules``, Debian's prometheus package, installed by
``deploy/setup-system.sh``)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ruamel.yaml import YAML

COMPOSE = Path(__file__).resolve().parents[2] / "deploy" / "compose"


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: make setup installs Debian's prometheus package (deploy/setup-system.sh)"
    return subprocess.run([promtool, *args], cwd=COMPOSE, capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid_and_loaded_by_prometheus() -> None:
    r = _promtool("check", "rules", "alerts.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    prom = YAML(typ="safe", pure=True).load((COMPOSE / "prometheus.yml").read_text())
    assert prom["rule_files"] == ["alerts.yml"]
    rules = YAML(typ="safe", pure=True).load((COMPOSE / "alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"AttnrecConsumerLagGrowing", "AttnrecDeadLetters", "AttnrecLatencyP99High", "AttnrecModelReloadFailed",
            "AttnrecOnlineHitRateDrop", "AttnrecModelNotBeatingTrending", "AttnrecRedisStateLost", "AttnrecNoModel",
            "AttnrecShadowDisagreement"} <= names


def test_every_alert_fires_and_stays_quiet_as_its_tests_say() -> None:
    r = _promtool("test", "rules", "alerts.test.yml")
    assert r.returncode == 0, r.stdout + r.stderr
    tests = YAML(typ="safe", pure=True).load((COMPOSE / "alerts.test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    rules = YAML(typ="safe", pure=True).load((COMPOSE / "alerts.yml").read_text())
    assert tested == {r["alert"] for g in rules["groups"] for r in g["rules"]}, "an alert without a firing test"


def test_a_broken_threshold_fails_the_tests(tmp_path: Path) -> None:
    """The tests can fail: the dead-letter alert with a ten times higher threshold misses its case."""
    (tmp_path / "alerts.yml").write_text((COMPOSE / "alerts.yml").read_text().replace("* 60 > 10", "* 60 > 100"))
    (tmp_path / "alerts.test.yml").write_text((COMPOSE / "alerts.test.yml").read_text())
    promtool = shutil.which("promtool")
    assert promtool
    r = subprocess.run([promtool, "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "AttnrecDeadLetters" in r.stdout + r.stderr


def _worker_series() -> set[str]:
    """Every series name the worker exports (histograms' _bucket/_sum/_count, counters' _total)."""
    from attnrec.stream.core.metrics import WorkerMetrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",), "info": ("_info",)}
    return {fam.name + sfx for fam in WorkerMetrics().registry.collect() for sfx in suffixes.get(fam.type, ("",))}


def test_the_grafana_panels_and_the_alerts_query_series_the_worker_exports(tmp_path: Path) -> None:
    import json
    import re

    panels = json.loads((COMPOSE.parent / "grafana" / "attnrec.json").read_text())["panels"]
    exprs = [t["expr"] for p in panels for t in p.get("targets", [])]
    rules = YAML(typ="safe", pure=True).load((COMPOSE / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    names = {n for e in exprs for n in re.findall(r"\b(attnrec_[a-z0-9_]+)", e)}
    assert {"attnrec_shadow_overlap_sum", "attnrec_online_ndcg_total", "attnrec_shadow_batches_total"} <= names
    unknown = sorted(names - _worker_series())
    assert not unknown, f"queried but never exported by the worker: {unknown}"
    titles = " ".join(p["title"] for p in panels)
    for figure in ("events in", "recommendations out", "latency", "lag", "dead letters", "model", "online HR@10",
                   "candidate vs serving", "interleaving", "shadow"):
        assert figure in titles, figure
    # every panel's query parses: promtool checks them as recording rules ($__rate_interval is Grafana's)
    doc = {"groups": [{"name": "grafana", "rules": [{"record": f"panel_{i}", "expr": e.replace("$__rate_interval", "5m")}
                                                   for i, e in enumerate(exprs)]}]}
    (tmp_path / "panels.yml").write_text(json.dumps(doc))
    r = _promtool("check", "rules", str(tmp_path / "panels.yml"))
    assert r.returncode == 0, r.stdout + r.stderr
