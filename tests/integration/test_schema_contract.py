"""The contracts on the wire, against the real stack and a real worker (issue #21).

Click events go in through the documented kcat line (docs/examples/kcat.sh produce: keyed by
user id, Java's partitioner), a few of them malformed. Then:

- every record the worker produced validates against its schema and carries the
  ``attnrec-schema`` header (``recs/1``, ``clicks.dlq/1``);
- the consumer example (docs/examples/consumer.py) prints the recommendations those events
  caused, by trigger_event_id;
- the documented kcat consume line (read_committed) prints them too.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.apps.bench.worker import WorkerHandle
from kafka.partitioner.default import murmur2

from attnrec import schemas
from attnrec.kafka_util import ensure_topics, make_consumer
from attnrec.registry import Registry
from attnrec.settings import Settings

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
USERS = [f"contract-u{i}" for i in range(6)]
ROUNDS = 3
BAD = [b"bad|{not json", b'bad|{"event_id":"x1","user_id":"u"}',
       b'bad|{"event_id":"x2","user_id":"u","item_id":"i","event_type":"view","ts":"yesterday"}']  # fmt: skip


def kcat_or_fail() -> str:
    path = shutil.which("kcat")
    if path is None:  # make setup installs it (deploy/setup-system.sh)
        pytest.fail("kcat is not installed: bash deploy/setup-system.sh")
    return str(path)


def collect(s: Any, topic: str, until: Any, timeout: float = 40.0) -> list[Any]:
    """Records of ``topic`` (read_committed, from the start) until ``until(records)`` holds."""
    c = make_consumer(s, topic, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while not until(out) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200, max_records=5000).values():
                out.extend(recs)
    finally:
        c.close()
    return out


@pytest.fixture(scope="module")
def run(stack: Any, registry_with_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """One worker; clicks produced with kcat; the records it produced, read back."""
    kcat_or_fail()
    tag = uuid.uuid4().hex[:8]
    names = {"clicks_topic": f"clicks-{tag}", "recs_topic": f"recs-{tag}", "dlq_topic": f"clicks-{tag}.dlq",
             "updates_topic": f"model-updates-{tag}", "group_id": f"attnrec-test-{tag}"}
    s = Settings(kafka_bootstrap=stack.bootstrap, redis_url=stack.redis_url, registry=registry_with_model, partitions=4,
                 **names)  # fmt: skip
    ensure_topics(s)
    env = {**os.environ, "BOOTSTRAP": s.kafka_bootstrap, "CLICKS_TOPIC": s.clicks_topic, "RECS_TOPIC": s.recs_topic,
           "DLQ_TOPIC": s.dlq_topic}  # fmt: skip
    reg = Registry(registry_with_model)
    known = [str(i) for i in reg.read_manifest(reg.current_version())["popularity"]][:20]
    home = tmp_path_factory.mktemp("contract-worker")
    w = WorkerHandle(s.model_copy(update={"home": home}), home, name="worker")  # `attnrec worker`, a subprocess
    try:
        w.wait_ready(90)
        sent: list[dict[str, Any]] = []
        for r in range(ROUNDS):
            lines = []
            for i, u in enumerate(USERS):
                ev = {"event_id": f"{tag}-e{r}-{i}", "user_id": u, "item_id": known[(r + i) % len(known)],
                      "event_type": ("view", "click", "purchase")[r], "ts": 1_764_300_000_000 + r * 1000 + i}
                if r == 1:
                    ev["ts"] = f"2025-11-28T03:20:0{i}.000Z"  # RFC 3339 is accepted as well
                sent.append(ev)
                lines.append(u.encode() + b"|" + orjson.dumps(ev))
            if r == 1:
                lines += BAD  # malformed input in the middle of the stream
            p = subprocess.run([str(EXAMPLES / "kcat.sh"), "produce"], input=b"\n".join(lines) + b"\n", env=env,
                               capture_output=True, timeout=30)  # fmt: skip
            assert p.returncode == 0, p.stderr.decode()[-2000:]
            time.sleep(0.7)  # one event per user per batch: each triggers its own recommendation
        last = {e["user_id"]: e["event_id"] for e in sent}
        recs = collect(s, s.recs_topic, lambda out: set(last.values()) <= {orjson.loads(m.value)["trigger_event_id"] for m in out})
        dead = collect(s, s.dlq_topic, lambda out: len(out) >= len(BAD))
        clicks = collect(s, s.clicks_topic, lambda out: len(out) >= len(sent) + len(BAD))
        yield {"s": s, "env": env, "sent": sent, "last": last, "recs": recs, "dead": dead, "clicks": clicks, "worker": w}
    finally:
        w.terminate()


def test_every_produced_record_follows_its_schema(run: dict[str, Any]) -> None:
    recs, dead, w = run["recs"], run["dead"], run["worker"]
    triggers = {orjson.loads(m.value)["trigger_event_id"] for m in recs}
    assert set(run["last"].values()) <= triggers, f"missing recommendations\n{w.tail()}"
    assert triggers <= {e["event_id"] for e in run["sent"]}
    for m in recs:
        assert dict(m.headers).get("attnrec-schema") == b"recs/1", m.headers
        value = orjson.loads(m.value)
        assert schemas.validate("recs", value) == [], value
        assert m.key == value["user_id"].encode()
    assert len(dead) == len(BAD), [orjson.loads(m.value)["error"] for m in dead]
    for m in dead:
        assert dict(m.headers).get("attnrec-schema") == b"clicks.dlq/1", m.headers
        env = orjson.loads(m.value)
        assert schemas.validate("clicks.dlq", env) == [], env
        assert m.key == b"bad" and base64.b64decode(env["key"]) == b"bad"
    raws = {base64.b64decode(orjson.loads(m.value)["raw"]) for m in dead}
    assert raws == {line.split(b"|", 1)[1] for line in BAD}
    # what the worker accepted is valid under the clicks schema; what it dead-lettered is not
    for m in run["clicks"]:
        obj = orjson.loads(m.value) if m.value.startswith(b"{\"") else None
        assert (schemas.validate("clicks", obj) == []) == (m.value not in raws), m.value
    # the documented kcat line partitions like the Java client (murmur2): one user, one partition
    n = run["s"].partitions
    for m in run["clicks"]:
        assert m.partition == (murmur2(m.key) & 0x7FFFFFFF) % n, (m.key, m.partition)


def test_the_consumer_example_prints_the_recommendations(run: dict[str, Any]) -> None:
    s, recs = run["s"], run["recs"]
    want = {orjson.loads(m.value)["trigger_event_id"]: orjson.loads(m.value) for m in recs}
    p = subprocess.run([sys.executable, str(EXAMPLES / "consumer.py"), "--bootstrap", s.kafka_bootstrap,
                        "--topic", s.recs_topic, "--group", f"example-{uuid.uuid4().hex[:6]}", "--from-beginning",
                        "--max-messages", str(len(want)), "--timeout", "20"],
                       capture_output=True, text=True, timeout=90)  # fmt: skip
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.splitlines()
    printed = {ln.rsplit("[trigger ", 1)[1].rstrip("]"): ln for ln in lines}
    assert set(printed) == set(want), (sorted(set(want) - set(printed)), p.stdout[-2000:])
    for trig, rec in want.items():
        ln = printed[trig]
        assert ln.startswith(rec["user_id"] + "  ")
        assert all(it["item_id"] in ln for it in rec["items"])
        assert ("fallback" in ln) if rec["fallback"] else ("because: " in ln)
    assert f"{len(want)} recommendations, 0 duplicates skipped" in p.stderr


def test_the_kcat_lines_print_them_too(run: dict[str, Any]) -> None:
    env, recs = run["env"], run["recs"]
    kcat = [str(EXAMPLES / "kcat.sh")]
    p = subprocess.run([*kcat, "consume"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0, p.stderr.decode()[-2000:]
    got = {}
    for ln in p.stdout.decode().splitlines():
        key, _, value = ln.partition(" ")
        rec = orjson.loads(value)
        assert key == rec["user_id"] and schemas.validate("recs", rec) == []
        got[rec["trigger_event_id"]] = rec
    assert set(got) == {orjson.loads(m.value)["trigger_event_id"] for m in recs}
    p = subprocess.run([*kcat, "headers"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout.count(b"attnrec-schema=recs/1") == len(got), p.stdout[-1000:]
    p = subprocess.run([*kcat, "dlq"], env=env, capture_output=True, timeout=60)
    assert p.returncode == 0 and len(p.stdout.splitlines()) == len(BAD), p.stdout[-1000:]
