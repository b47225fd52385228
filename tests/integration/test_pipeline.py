"""The walking skeleton end to end: clicks -> worker -> Redis buffers + recs + dead letters."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import decode_entry

from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics, make_consumer
from attnrec.redis_util import redis_sync
from tests.feeding import Feeder
from tests.helpers import WorkerProc, settings_for

pytestmark = pytest.mark.integration

REC_KEYS = {"user_id", "items", "model_version", "fallback", "trigger_event_id", "event_ts", "emitted_ts", "because"}


def collect(s: Any, topic: str, want: int, timeout: float = 60.0) -> list[Any]:
    c = make_consumer(s, topic, group_id=None)
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < want and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=200, max_records=5000).values():
                out.extend(recs)
    finally:
        c.close()
    return out


def test_click_to_recommendation(stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path) -> None:
    s = settings_for(stack, names, registry_with_model, buffer_len=5)
    ensure_topics(s)
    w = WorkerProc(s, tmp_path)
    try:
        info = w.wait_ready()
        assert info["model_version"]
        feeder = Feeder(s)
        from attnrec.registry import Registry

        reg = Registry(registry_with_model)
        known = [str(i) for i in reg.read_manifest(reg.current_version())["popularity"]][:20]
        users = [f"user-{i}" for i in range(12)]
        sent: list[ClickEvent] = []
        rounds = 7
        for r in range(rounds):
            for i, u in enumerate(users):
                ev = ClickEvent(f"e-{r}-{i}", u, known[(r + i) % len(known)], "click", 1_764_300_000_000 + r * 1000 + i)
                sent.append(ev)
                feeder.send(ev)
            if r == 2:  # malformed input in the middle of the stream
                feeder.send_raw(b"{not json", key=b"bad")
                feeder.send_raw(orjson.dumps({"event_id": "x", "user_id": "u"}), key=b"bad")
            feeder.flush()
            # the next round only once this one's recommendations are out: one event per user per
            # batch, so every event triggers its own (a slow round on a busy box would otherwise
            # share a batch with the next, and a user's two events one recommendation)
            got = collect(s, s.recs_topic, len(sent))
            assert len(got) >= len(sent), f"round {r}: {len(got)} recommendations of {len(sent)}\n{w.tail()}"
        feeder.close()

        recs = collect(s, s.recs_topic, len(sent))
        by_trigger = {orjson.loads(m.value)["trigger_event_id"]: orjson.loads(m.value) for m in recs}
        missing = [e.event_id for e in sent if e.event_id not in by_trigger]
        assert not missing, f"{len(missing)} events without a recommendation, e.g. {missing[:5]}\n{w.tail()}"
        for e in sent:
            rec = by_trigger[e.event_id]
            assert REC_KEYS <= set(rec), rec
            assert rec["user_id"] == e.user_id
            assert rec["model_version"] == info["model_version"]
            assert rec["event_ts"] == e.ts
            scores = [it["score"] for it in rec["items"]]
            assert scores == sorted(scores, reverse=True)
            assert 0 < len(rec["items"]) <= s.top_k
        # a user with known history is personalised and explained, and never shown what it saw
        last = by_trigger[sent[-1].event_id]
        assert last["fallback"] is False and last["because"], last
        seen = {e.item_id for e in sent if e.user_id == last["user_id"]}
        assert not seen & {it["item_id"] for it in last["items"]}

        dead = collect(s, s.dlq_topic, 2)
        errors = sorted(orjson.loads(m.value)["error"] for m in dead)
        assert len(errors) == 2, errors
        assert any("not JSON" in e for e in errors) and any("missing field 'item_id'" in e for e in errors)
        env = orjson.loads(dead[0].value)
        assert {"error", "raw", "key", "topic", "partition", "offset", "ts"} <= set(env)
        assert env["topic"] == s.clicks_topic

        # Redis: newest first, capped at buffer_len
        r = redis_sync(s)
        for u in users[:3]:
            raw = r.lrange(user_keys(u)[0], 0, -1)
            got = [decode_entry(x) for x in raw]
            want = [e for e in sent if e.user_id == u][::-1][: s.buffer_len]
            assert [(g.item_id, g.ts) for g in got] == [(e.item_id, e.ts) for e in want]
        # the lookup API returns the latest recommendation
        code, body = w.get(f"/recs/{users[0]}")
        assert code == 200 and orjson.loads(body)["user_id"] == users[0]
        assert w.get("/recs/nobody")[0] == 404
    finally:
        w.terminate()
