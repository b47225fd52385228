"""Fault tests: the worker under kill -9, Redis and Kafka restarts, a lost group member and
hostile input, against the real local stack.

Each test compares what the broker acknowledged to the producer with every user's Redis
buffer and reads the ``recs`` topic as a ``read_committed`` consumer (``tests/faultkit.py``):
each acknowledged event exactly once in state, every trigger's recommendation exactly once in
the output, and recommendations resume after the fault. Measurements (events sent, lost, duplicated in
state, recovery time) go to ``<pytest basetemp>/reliability.json`` (or the file named by
``ATTNREC_RELIABILITY_JSON``) and are printed (``-s``); docs/RELIABILITY.md copies them.

Faust reads ``BROKER_SESSION_TIMEOUT`` / ``BROKER_HEARTBEAT_INTERVAL`` from the environment:
the tests use 10 s / 1 s so that a SIGKILLed group member is evicted in ~10 s instead of
faust's default 60 s (the recovery time of the kill tests is that timeout, by design).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis
from attnrec.stream.core.buffer import APPLIED, REDELIVERED, RETRY, STATE_KEY, RedisBuffers, user_keys
from attnrec.stream.core.records import MAX_DLQ_RAW

from attnrec.errors import StateLostError
from attnrec.events import ClickEvent
from attnrec.redis_util import redis_sync
from tests.faultkit import (
    Scenario,
    assert_exact,
    buffers_of,
    check_recs,
    check_state,
    finish,
    metric,
    read_topic,
    wait_applied,
    wait_progress,
)
from tests.feeding import T0
from tests.helpers import WorkerProc

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.usefixtures("fast_group_eviction")]

REFUSE_S = 6.0  # longer than max_attempts x backoff (~1.5 s): a poison path would dead-letter


# ----------------------------------------------------------------------------- fixtures

# ----------------------------------------------------------------------------- 1. worker stopped
@pytest.mark.timeout(300)
@pytest.mark.parametrize("signal_name", ["sigkill", "sigterm"])
def test_worker_stopped_and_restarted(signal_name: str, scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """The worker killed (SIGKILL) or stopped (SIGTERM) mid-stream and a successor started.
    SIGKILL: what was applied but not committed is redelivered and deduped. SIGTERM: the worker
    finishes the batch in hand, commits and leaves the group with exit code 0, so its
    successor starts at once and (almost) nothing is redelivered."""
    sc = scenario(buffer_len=4000)
    s, r = sc.s, sc.r
    started = time.time()
    w1 = sc.worker("w1")
    feeder = sc.feeder()
    w1.wait_ready()
    cold_start_s = time.time() - started
    feeder.start(n=3000, rate=200)
    wait_progress(r, feeder, 1000)
    fault_at = time.time()
    extra: dict[str, Any] = {}
    if signal_name == "sigkill":
        w1.kill()
    else:
        extra["exit_code"] = w1.terminate(timeout=60)
        extra["stop_s"] = round(time.time() - fault_at, 2)
    w2 = sc.worker("w2")
    w2.wait_ready()
    ready_s = time.time() - fault_at
    feeder.join()
    caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=120)
    time.sleep(1.0)  # anything applied twice would show up now
    row = finish(f"worker_{signal_name}", report, check_state(r, feeder), check_recs(s, feeder, fault_at), **extra,
                 cold_start_s=round(cold_start_s, 2), restart_ready_s=round(ready_s, 2), caught_up_s=round(caught - fault_at, 2) if caught > 0 else None,
                 redelivered_deduped=metric(w2, "attnrec_events_duplicate_total"))  # fmt: skip
    assert_exact(row, w2.tail() if signal_name == "sigkill" else w1.tail())
    assert row["acked"] == row["sent"]
    if signal_name == "sigterm":
        assert extra["exit_code"] == 0, f"worker exited {extra['exit_code']} on SIGTERM:\n{w1.tail()}"


# ----------------------------------------------------------------------------- 2. Redis restarts
def _redis_restart(sc: Scenario, stack: Any, *, kill: bool, fsync: str,
                   down_s: float = 2.0) -> tuple[dict[str, Any], WorkerProc]:  # fmt: skip
    s, r = sc.s, sc.r
    r.config_set("appendfsync", fsync)
    w = sc.worker("w")
    feeder = sc.feeder()
    try:
        w.wait_ready()
        feeder.start(n=2500, rate=200)
        wait_progress(r, feeder, 1000)
        fault_at = time.time()
        stack.stop_redis(kill=kill)
        time.sleep(down_s)  # Redis is down: the worker must pause, not drop
        stack.start_redis()
        back_s = time.time() - fault_at
        r = redis_sync(s)
        r.config_set("appendfsync", fsync)
        feeder.join()
        caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=120)
        time.sleep(1.0)
        row = {**check_state(r, feeder), **check_recs(s, feeder, fault_at), "redis_down_s": round(back_s, 2),
               "caught_up_s": round(caught - fault_at, 2) if caught > 0 else None,
               "transient_retries": metric(w, "attnrec_batch_retries_total")}  # fmt: skip
        return row, w
    finally:
        try:
            redis_sync(s).config_set("appendfsync", "everysec")
        except redis.exceptions.RedisError:
            pass


@pytest.mark.timeout(300)
def test_redis_sigterm_restart(stack: Any, scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """Clean Redis restart (SIGTERM flushes and fsyncs the AOF), appendfsync everysec."""
    row, w = _redis_restart(scenario(buffer_len=4000), stack, kill=False, fsync="everysec")
    finish("redis_sigterm_everysec", report, row, {})
    assert_exact(row, w.tail())
    assert row["transient_retries"] > 0, "the worker never saw Redis down?"


@pytest.mark.timeout(300)
def test_redis_sigkill_restart_fsync_always(stack: Any, scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """kill -9 of Redis with ``appendfsync always``: every acknowledged write is on disk."""
    row, w = _redis_restart(scenario(buffer_len=4000), stack, kill=True, fsync="always")
    finish("redis_sigkill_always", report, row, {})
    assert_exact(row, w.tail())


@pytest.mark.timeout(300)
def test_redis_sigkill_restart_fsync_everysec(stack: Any, scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """kill -9 of Redis with ``appendfsync everysec`` (the stack's default). A killed process
    loses nothing the kernel already has (Redis write()s the AOF before replying), so loss is
    only possible when Redis had postponed that write behind a slow fsync, or on a machine
    crash. Measured and reported; duplicates are never acceptable; loss is asserted zero
    here as well, since a process kill cannot drop page-cache data in the common case."""
    row, w = _redis_restart(scenario(buffer_len=4000), stack, kill=True, fsync="everysec")
    finish("redis_sigkill_everysec", report, row, {})
    assert row["duplicated_in_state"] == 0 and row["unknown_in_state"] == 0, row
    assert_exact(row, w.tail())


@pytest.mark.timeout(300)
def test_redis_refuses_writes(scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """Redis up but refusing writes for a few seconds (OOM under ``maxmemory`` with
    ``noeviction``; the same class of reply as READONLY during a failover or MISCONF on a
    full disk): the worker must pause and retry, not dead-letter the events as poison."""
    sc = scenario(buffer_len=4000)
    s, r = sc.s, sc.r
    w = sc.worker("w")
    feeder = sc.feeder()
    policy = r.config_get("maxmemory-policy")["maxmemory-policy"]
    try:
        w.wait_ready()
        feeder.start(n=2500, rate=200)
        wait_progress(r, feeder, 1000)
        fault_at = time.time()
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", "1")
        time.sleep(REFUSE_S)
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", policy)
        feeder.join()
        caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=120)
        time.sleep(1.0)
        dead = read_topic(s, s.dlq_topic, lambda m: False, timeout=3)
        row = finish("redis_refuses_writes_oom", report, check_state(r, feeder), check_recs(s, feeder, fault_at),
                     refused_s=REFUSE_S, caught_up_s=round(caught - fault_at, 2) if caught > 0 else None,
                     dead_letters=len(dead), retries=metric(w, "attnrec_batch_retries_total"))  # fmt: skip
        assert not dead, [orjson.loads(m.value)["error"] for m in dead[:3]]
        assert_exact(row, w.tail())
    finally:
        r.config_set("maxmemory", "0")
        r.config_set("maxmemory-policy", policy)


# ----------------------------------------------------------------------------- 3. Kafka restart
@pytest.mark.timeout(360)
def test_kafka_broker_restart(stack: Any, scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """kill -9 the broker (KRaft, single node) mid-stream and start it again in place; the
    worker must carry on by itself. The producer keeps sending through the outage."""
    sc = scenario(buffer_len=4000)
    s, r = sc.s, sc.r
    w = sc.worker("w")
    feeder = sc.feeder()
    w.wait_ready()
    feeder.start(n=3000, rate=200)
    wait_progress(r, feeder, 1000)
    fault_at = time.time()
    try:
        stack.stop_kafka(kill=True)
        time.sleep(2.0)
    finally:
        stack.start_kafka(timeout=120)  # the session's broker must come back whatever happens
    back_s = time.time() - fault_at
    feeder.join()
    caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=150)
    time.sleep(1.0)
    assert w.proc.poll() is None, f"worker died with the broker:\n{w.tail()}"
    row = finish("kafka_sigkill_restart", report, check_state(r, feeder), check_recs(s, feeder, fault_at, timeout=90),
                 broker_down_s=round(back_s, 2), caught_up_s=round(caught - fault_at, 2) if caught > 0 else None)  # fmt: skip
    assert_exact(row, w.tail())


# ----------------------------------------------------------------------------- 4. group failover
@pytest.mark.timeout(300)
def test_two_workers_one_sigkilled(scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    sc = scenario(buffer_len=4000, partitions=8)
    s, r = sc.s, sc.r
    a = sc.worker("a")
    b = sc.worker("b")
    feeder = sc.feeder()
    a.wait_ready()
    b.wait_ready()
    deadline = time.monotonic() + 60  # both members hold partitions before the load starts
    while time.monotonic() < deadline:
        pa, pb = (json.loads(x.get("/readyz")[1])["assigned_partitions"] for x in (a, b))
        if pa and pb and pa + pb == 8:
            break
        time.sleep(0.5)
    assert pa and pb, f"partitions not split: a={pa} b={pb}"
    feeder.start(n=3000, rate=200)
    wait_progress(r, feeder, 1000)
    fault_at = time.time()
    a.kill()
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and json.loads(b.get("/readyz")[1])["assigned_partitions"] != 8:
        time.sleep(0.3)
    takeover_s = time.time() - fault_at
    feeder.join()
    caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=120)
    time.sleep(1.0)
    row = finish("group_member_sigkill", report, check_state(r, feeder), check_recs(s, feeder, fault_at),
                 partitions_before={"a": pa, "b": pb}, takeover_s=round(takeover_s, 2),
                 caught_up_s=round(caught - fault_at, 2) if caught > 0 else None,
                 redelivered_deduped=metric(b, "attnrec_events_duplicate_total"))  # fmt: skip
    assert_exact(row, b.tail())


# ----------------------------------------------------------------------------- 5. hostile input
@pytest.mark.timeout(300)
def test_poison_and_hostile_input(scenario: Callable[..., Scenario], known_items: list[str], report: dict[str, Any]) -> None:
    cap = 50
    sc = scenario(buffer_len=cap)
    s, r = sc.s, sc.r
    w = sc.worker("w")
    feeder = sc.feeder(n_users=20)
    base = {"event_type": "click", "ts": T0}
    bad: list[tuple[bytes, str]] = [  # (value, expected error) — each must be dead-lettered
        (b"{not json", "not JSON"),
        (b"\xff\xfe\x00garbage", "not JSON"),
        (b"[]", "expected a JSON object"),
        (b"", "not JSON"),
        (orjson.dumps({"event_id": "x1", "user_id": "u", "item_id": "i", "event_type": "click"}), "missing field 'ts'"),
        (orjson.dumps({"user_id": "u", "item_id": "i", **base}), "missing field 'event_id'"),
        (orjson.dumps({"event_id": "x2", "user_id": 5, "item_id": "i", **base}), "must be a string"),
        (
            orjson.dumps({"event_id": "x3", "user_id": "u", "item_id": "i", "event_type": "click", "ts": "soon"}),
            "RFC 3339",
        ),
        (orjson.dumps({"event_id": "x4", "user_id": "u", "item_id": "i" * 300, **base}), "longer than 256 bytes"),
        (orjson.dumps({"event_id": "x5", "user_id": "u" * 300, "item_id": "i", **base}), "longer than 256 bytes"),
        (
            orjson.dumps({"event_id": "x6", "user_id": "u", "item_id": "i", **base, "context": {"x": "y" * 70_000}}),
            "exceeds 65536",
        ),
        (b" " * 70_000 + b"{}", "exceeds 65536"),
        # near the broker's 1 MB limit: its envelope (base64) would not fit in a message
        (b'{"pad": "' + b"x" * 900_000 + b'"}', "exceeds 65536"),
        (
            orjson.dumps({"event_id": "x7", "user_id": "u", "item_id": "i", **base, "context": {"x": "y" * 5000}}),
            "'context' larger",
        ),
    ]
    w.wait_ready()
    t_start = time.time()
    # ordinary traffic, with every kind of bad message and oddity in the middle of it
    for _ in range(300):
        feeder.send(feeder.make())
    for i, (value, _) in enumerate(bad):
        feeder.send_raw(value, key=f"bad-{i}".encode())
    feeder.send_raw(None, key=b"null-value")
    odd: list[ClickEvent] = []
    for i in range(20):  # valid but odd: unknown type -> 'other'; unknown and 256-byte item ids
        ev = feeder.make()
        item = ("x" * 250 + f"{i:06d}") if i % 2 else f"never-seen-{i}|with|pipes"
        ev = ClickEvent(ev.event_id, ev.user_id, item, "teleport" if i % 3 == 0 else ev.event_type, ev.ts)
        odd.append(ev)
        feeder.send(ev)
    cold = ClickEvent(f"{feeder.tag}-cold", f"{feeder.tag}-cold-user", "never-seen-item", "view", T0 + 10**8)
    feeder.send(cold)  # a user with no usable history: popularity fallback
    dups = [feeder.events[f"{feeder.tag}-e{k}"] for k in range(0, 300, 15)]
    for ev in dups:  # the producer "retries": same event_id again, at a new offset
        feeder.send(ev)
    heavy = f"{feeder.tag}-heavy"
    for k in range(10_000):  # one user floods the stream
        feeder.send(
            ClickEvent(f"{feeder.tag}-h{k}", heavy, known_items[k % len(known_items)], "view", T0 + 10**7 + k)
        )
    for _ in range(300):  # and the stream keeps flowing after all of it
        feeder.send(feeder.make())
    feeder.flush(timeout=60)
    assert not feeder.failed, list(feeder.failed.items())[:3]

    want = {u: min(cap, len(v)) for u, v in feeder.expected().items()}
    caught = wait_applied(r, want, timeout=150)
    assert caught > 0, f"the stream stalled:\n{w.tail()}"
    time.sleep(1.0)
    state = check_state(r, feeder, cap=cap)
    assert w.proc.poll() is None, w.tail()

    # the flood: capped at exactly the newest `cap`, dedupe memory bounded
    hb = buffers_of(r, [heavy])[heavy]
    assert [e.ts for e in hb] == [T0 + 10**7 + k for k in range(9_999, 9_999 - cap, -1)]
    assert r.zcard(user_keys(heavy)[1]) == s.dedupe_window
    # odd events are stored as sent (unknown type as 'other')
    odd_bufs = buffers_of(r, sorted({e.user_id for e in odd}))
    stored = {e.ts: e for b in odd_bufs.values() for e in b}
    for ev in odd:
        got = stored[ev.ts]
        assert (got.item_id, got.event_type) == (
            ev.item_id,
            "other" if ev.event_type == "teleport" else ev.event_type,
        )

    dead = read_topic(s, s.dlq_topic, lambda m: len(m) >= len(bad) + 1, timeout=60)
    envs = [orjson.loads(m.value) for m in dead]
    assert len(envs) == len(bad) + 1, [e["error"] for e in envs]
    by_key = {e["key"]: e for e in envs}
    import base64

    for i, (value, error) in enumerate(bad):
        env = by_key[base64.b64encode(f"bad-{i}".encode()).decode()]
        assert error in env["error"], (i, env["error"])
        raw = base64.b64decode(env["raw"])
        assert env["topic"] == s.clicks_topic
        if len(value) <= MAX_DLQ_RAW:
            assert raw == value
        else:  # cut to what fits in a dead letter, and the error says so
            assert raw == value[:MAX_DLQ_RAW] and f"first {MAX_DLQ_RAW} of {len(value)} bytes" in env["error"], env[
                "error"
            ]
    assert "empty message" in by_key[base64.b64encode(b"null-value").decode()]["error"]

    last = {u: evs[-1].event_id for u, evs in feeder.expected().items()}
    recs = [orjson.loads(m.value) for m in read_topic(
        s, s.recs_topic, lambda ms: {orjson.loads(m.value)["trigger_event_id"] for m in ms} >= set(last.values()), 60)]  # fmt: skip
    trig = {p["trigger_event_id"]: p for p in recs}
    missing = [e for e in last.values() if e not in trig]
    assert not missing, missing[:5]
    assert trig[cold.event_id]["fallback"] is True and trig[cold.event_id]["items"]
    assert all(len(p["items"]) <= s.top_k for p in recs)
    row = finish("hostile_input", report, state, check_recs(s, feeder, t_start, timeout=60),
                 dead_letters=len(envs), flood_user_events=10_000, flood_buffer_len=len(hb),
                 produced_twice=len(dups), unknown_types=metric(w, "attnrec_events_unknown_type_total"),
                 drain_s=round(caught - t_start, 2))  # fmt: skip
    assert state["lost"] == 0 and state["duplicated_in_state"] == 0 and state["unknown_in_state"] == 0, row
    assert row["recs_missing"] == 0 and row["recs_repeated"] == 0, f"the events produced twice triggered twice: {row}"
    assert metric(w, "attnrec_events_duplicate_total") >= len(dups)


# ----------------------------------------------------------------------------- 6. dedupe
@pytest.mark.timeout(60)
async def test_same_event_twice_changes_nothing(stack: Any) -> None:
    """At the buffer level against real Redis: a redelivery (same offset) and a producer
    retry (same event_id, new offset) are both no-ops, alone or inside one batch."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(stack.redis_url)
    buf = RedisBuffers(client, max_len=10, dedupe_window=4)
    await buf.mark_state("test")
    u = f"dedupe-{uuid.uuid4().hex[:8]}"
    rk, ek, wk, _ = user_keys(u)
    evs = [ClickEvent(f"{u}-e{k}", u, f"item-{k}", "click", T0 + k) for k in range(6)]

    async def snapshot() -> tuple[Any, ...]:
        return (
            await client.lrange(rk, 0, -1),
            await client.zrange(ek, 0, -1, withscores=True),
            await client.hgetall(wk),
        )

    try:
        res = await buf.apply([(evs[0], "clicks:0", 10), (evs[1], "clicks:0", 11)])
        assert res.applied == [True, True]
        before = await snapshot()
        res = await buf.apply([(evs[1], "clicks:0", 11)])  # redelivery after a crash
        assert res.codes == [REDELIVERED] and res.applied == [False] and await snapshot() == before
        res = await buf.apply([(evs[0], "clicks:0", 12)])  # producer retry: new offset, same event_id
        assert res.codes == [RETRY] and res.applied == [False]
        after = await snapshot()
        assert after[0] == before[0] and after[1] == before[1], "buffer and event-id memory unchanged"
        # within one batch: the second copy is skipped, the new event still applied
        res = await buf.apply([(evs[2], "clicks:0", 13), (evs[2], "clicks:0", 14), (evs[3], "clicks:0", 15)])
        assert res.codes == [APPLIED, RETRY, APPLIED]
        assert [x.item_id for x in res.buffers[u]] == ["item-3", "item-2", "item-1", "item-0"]
        # a redelivered older offset is skipped even when its event_id fell out of the window
        for k in (4, 5):
            await buf.apply([(evs[k], "clicks:0", 15 + k)])
        assert await client.zcard(ek) == 4
        res = await buf.apply([(evs[0], "clicks:0", 10)])
        assert res.applied == [False] and len(await client.lrange(rk, 0, -1)) == 6
        # without an offset (-1), only the event_id check applies; every key still expires
        v = u + "-nooffset"
        res = await buf.apply([(ClickEvent(f"{v}-x", v, "i", "view", T0), "", -1)] * 2)
        assert res.codes == [APPLIED, RETRY]
        for k in user_keys(v)[:3] + (rk, ek, wk):
            assert 0 < await client.ttl(k) <= buf.ttl_s, k
        # without the state marker (an empty Redis after a failover) nothing is applied at all
        await client.rename(STATE_KEY, STATE_KEY + ":away")
        try:
            with pytest.raises(StateLostError):
                await buf.apply([(evs[5], "clicks:0", 99)])
            assert not await buf.has_state()
        finally:
            await client.rename(STATE_KEY + ":away", STATE_KEY)
        assert await client.hget(wk, "clicks:0") == b"20", "the refused batch wrote nothing"
    finally:
        await client.delete(rk, ek, wk, *user_keys(u + "-nooffset"))
        await client.aclose()


# ----------------------------------------------------------------------------- 7. AOF policy
@pytest.mark.timeout(120)
async def test_redis_aof_policy_cost_and_kill9(tmp_path: Path, report: dict[str, Any]) -> None:
    """On a private Redis (AOF on): the cost of ``appendfsync always`` against ``everysec``
    for the worker's one-Lua-call-per-batch writes, and what a kill -9 right after the last
    acknowledged batch loses under each policy (nothing: a killed process cannot take back
    what it already write()s to the kernel; only a machine crash can, and only with everysec)."""
    import redis.asyncio as aioredis
    from attnrec.apps.stack import LocalStack, free_port

    st = LocalStack(tmp_path / "stack", redis_port=free_port())
    st.root.mkdir(parents=True)
    st.start_redis()
    out: dict[str, Any] = {}
    try:
        for policy in ("everysec", "always"):
            client = aioredis.Redis.from_url(st.redis_url)
            await client.config_set("appendfsync", policy)
            buf = RedisBuffers(client, max_len=200)
            await buf.mark_state("test")
            tag = f"aof-{policy}"
            n_batches, per_batch, n_users = 40, 256, 64
            t0 = time.perf_counter()
            for b in range(n_batches):
                batch = [
                    (ClickEvent(f"{tag}-{b}-{i}", f"{tag}-u{i % n_users}", f"it{i}", "view", T0 + b * per_batch + i), "clicks:0", b * per_batch + i)
                    for i in range(per_batch)
                ]  # fmt: skip
                await buf.apply(batch)
            dt = time.perf_counter() - t0
            await client.aclose()
            st.stop_redis(kill=True)  # immediately after the last acknowledged batch
            st.start_redis()
            r = redis.Redis.from_url(st.redis_url)
            kept = sum(r.llen(user_keys(f"{tag}-u{i}")[0]) for i in range(n_users))
            want = n_users * min(200, n_batches * per_batch // n_users)
            out[policy] = {"batches": n_batches, "events_per_batch": per_batch, "ms_per_batch": round(1000 * dt / n_batches, 3),
                           "us_per_event": round(1e6 * dt / (n_batches * per_batch), 2),
                           "kill9_entries_expected": want, "kill9_entries_kept": kept}  # fmt: skip
    finally:
        st.stop_redis()
    report["redis_aof_policy"] = out
    print(f"\nredis_aof_policy: {json.dumps(out, sort_keys=True)}")
    for policy, row in out.items():
        assert row["kill9_entries_kept"] == row["kill9_entries_expected"], (policy, row)
