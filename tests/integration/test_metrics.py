"""A worker's ``/metrics``: parsed with the Prometheus text parser, counted against what was sent.

Every counter the dashboards rely on is checked against ground truth from Kafka itself
(events produced, records on ``recs`` and ``clicks.dlq``), plus the model gauges across a
good promotion and a corrupt one.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics, make_consumer
from attnrec.registry import Registry
from tests.feeding import Feeder
from tests.helpers import WorkerProc, republish, settings_for

pytestmark = pytest.mark.timeout(170)


def scrape(w: WorkerProc) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """``{sample name: {sorted label pairs: value}}`` from the worker's /metrics."""
    code, body = w.get("/metrics")
    assert code == 200, body[:300]
    out: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for fam in text_string_to_metric_families(body.decode()):
        for smp in fam.samples:
            out.setdefault(smp.name, {})[tuple(sorted(smp.labels.items()))] = smp.value
    return out


def total(m: dict[str, Any], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for k, v in m.get(name, {}).items() if want <= set(k))


def topic_records(s: Any, topic: str) -> list[Any]:
    """Every record on a topic, read to its end offsets."""
    c = make_consumer(s, group_id=None)
    try:
        from kafka import TopicPartition

        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + 30
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200).values():
                out.extend(recs)
        return out
    finally:
        c.close()


def wait_for(w: WorkerProc, cond: Any, what: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    m: dict[str, Any] = {}
    while time.monotonic() < deadline:
        m = scrape(w)
        if cond(m):
            return m
        time.sleep(0.3)
    raise AssertionError(f"/metrics never showed {what}:\n" + "\n".join(f"{k} {dict(v)}" for k, v in sorted(m.items()) if k.startswith("attnrec"))
                         + f"\n{w.tail()}")  # fmt: skip


@pytest.mark.integration
def test_metrics_match_events_sent(stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path) -> None:
    reg_dir = tmp_path / "registry"
    shutil.copytree(registry_with_model, reg_dir)  # this test promotes versions: keep the shared one intact
    reg = Registry(reg_dir)
    v1 = reg.current_version()
    assert v1 is not None
    s = settings_for(stack, names, reg_dir, reload_poll_s=0.3)
    ensure_topics(s)
    items = [str(i) for i in reg.read_manifest(v1)["popularity"]][:30]
    w = WorkerProc(s, tmp_path)
    feeder = Feeder(s)
    try:
        assert w.wait_ready()["model_version"] == v1
        m0 = scrape(w)
        assert total(m0, "attnrec_events_total") == 0 and total(m0, "attnrec_model_loaded") == 1
        assert total(m0, "attnrec_model_info", version=v1) == 1
        assert total(m0, "attnrec_model_reloads_total", result="success") == 1  # the start-up load

        sent = [ClickEvent(f"m-{i}", f"mu-{i % 12}", items[i % len(items)], "click", int(time.time() * 1000) + i) for i in range(60)]
        for ev in sent:
            feeder.send(ev)
        for ev in sent[:5]:  # a producer's retries: same event_id at new offsets
            feeder.send(ev)
        bad = {
            "not_json": [b"{not json", b"\xff\xfe"],
            "missing_field": [orjson.dumps({"event_id": "x", "user_id": "u", "event_type": "view", "ts": 1})],
            "oversize": [orjson.dumps({"event_id": "y", "user_id": "u", "item_id": "i", "event_type": "view", "ts": 1, "pad": "z" * 70_000})],
        }
        for vals in bad.values():
            for v in vals:
                feeder.send_raw(v, key=b"bad")
        feeder.flush()
        n_valid, n_bad = len(sent) + 5, sum(len(v) for v in bad.values())

        m = wait_for(w, lambda m: total(m, "attnrec_events_total") >= n_valid and total(m, "attnrec_dead_letters_total") >= n_bad,
                     "every event counted")  # fmt: skip
        time.sleep(1.0)  # nothing more is in flight; counters must not move past the truth
        m = scrape(w)
        # a batch retried after a transient failure (a busy machine: Redis timeouts) may have
        # produced some of its output twice; counters count a batch once, so compare unique ones
        retried = total(m, "attnrec_batch_retries_total")
        recs = [orjson.loads(r.value) for r in topic_records(s, s.recs_topic)]
        dead = list({(e["partition"], e["offset"]): e for e in (orjson.loads(r.value) for r in topic_records(s, s.dlq_topic))}.values())

        assert total(m, "attnrec_events_total") == n_valid
        assert total(m, "attnrec_events_applied_total") == len(sent)
        assert total(m, "attnrec_events_duplicate_total") == 5
        assert total(m, "attnrec_dead_letters_total") == n_bad == len(dead)
        for reason, vals in bad.items():
            assert total(m, "attnrec_dead_letters_total", reason=reason) == len(vals), (reason, m["attnrec_dead_letters_total"])
        if not retried:
            assert total(m, "attnrec_recs_total") == len(recs) > 0
            assert total(m, "attnrec_recs_fallback_total") == sum(1 for r in recs if r["fallback"])
        else:
            assert 0 < total(m, "attnrec_recs_total") <= len(recs)
        assert {r["user_id"] for r in recs} == {e.user_id for e in sent}
        # histograms: every record went through exactly one batch; one latency per recommendation
        assert total(m, "attnrec_batch_size_sum") == n_valid + n_bad
        assert total(m, "attnrec_batch_size_count") >= 1
        assert total(m, "attnrec_batch_size_bucket", le="+Inf") == total(m, "attnrec_batch_size_count")
        assert total(m, "attnrec_e2e_latency_ms_count") == len(recs)
        for h in ("attnrec_redis_ms", "attnrec_model_ms", "attnrec_produce_ms"):
            assert total(m, f"{h}_count") >= 1 and total(m, f"{h}_sum") > 0, h
        # lag: a gauge per processed input partition, zero once drained
        m = wait_for(w, lambda m: m.get("attnrec_consumer_lag") and all(v == 0 for v in m["attnrec_consumer_lag"].values()),
                     "zero lag once drained", timeout=20)  # fmt: skip
        assert total(m, "attnrec_events_total") == n_valid, "counted past the events sent"
        assert total(m, "attnrec_assigned_partitions") == s.partitions

        # a good promotion: reload success, then the new version is served (swapped between batches)
        v2 = republish(reg, v1)
        reg.promote(v2, reason="test: same weights, new version")
        wait_for(w, lambda m: total(m, "attnrec_model_reloads_total", result="success") == 2, "the reload of v2")
        feeder.send_all([ClickEvent("m-after-v2", "mu-0", items[0], "view", int(time.time() * 1000))])
        # the swap happens mid-batch, the counters at its end: wait for both
        m = wait_for(w, lambda m: total(m, "attnrec_model_info", version=v2) == 1 and total(m, "attnrec_events_total") == n_valid + 1,
                     "v2 served")  # fmt: skip
        assert total(m, "attnrec_model_info", version=v1) == 0

        # a corrupt promotion: reload failure counted, v2 kept
        v3 = republish(reg, v1)
        with open(reg.version_dir(v3) / "model.onnx", "r+b") as f:
            f.truncate(100)
        reg.promote(v3, reason="test: corrupt", verify=False)
        m = wait_for(w, lambda m: total(m, "attnrec_model_reloads_total", result="failure") == 1, "the rejected reload")
        feeder.send_all([ClickEvent("m-after-v3", "mu-1", items[1], "view", int(time.time() * 1000))])
        m = wait_for(w, lambda m: total(m, "attnrec_events_total") == n_valid + 2, "the last event")
        assert total(m, "attnrec_model_info", version=v2) == 1 and total(m, "attnrec_model_loaded") == 1
        assert total(m, "attnrec_model_reloads_total", result="success") == 2
    finally:
        feeder.close()
        w.terminate()

