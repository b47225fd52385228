"""Exactly-once output (the default): faults that used to repeat recommendations, and the new
ones of the exactly-once design — a producer's retry, a worker paused past its session timeout
(a zombie, fenced), the broker paused past it, a rebalance storm under load, and Redis replaced
by an empty instance (the worker pauses and says so, nothing is silently rebuilt).

Every scenario checks state (each acknowledged event once in Redis) and output (read committed:
no recommendation missing, none repeated) with ``tests/faultkit.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.apps.stack import LocalStack, free_port
from attnrec.stream.core.buffer import STATE_KEY, user_keys
from attnrec.stream.core.output import Outbox
from attnrec.stream.core.records import RawRecord
from attnrec.stream.core.transactions import Transactions

from attnrec.kafka_util import committed_offsets, ensure_topics
from tests.faultkit import (
    SESSION_TIMEOUT_S,
    Scenario,
    assert_exact,
    check_recs,
    check_state,
    finish,
    metric,
    read_topic,
    wait_applied,
    wait_progress,
)
from tests.helpers import settings_for

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.usefixtures("fast_group_eviction")]


def _settle(sc: Scenario, feeder: Any, fault_at: float, name: str, report: dict[str, Any], **extra: Any) -> dict[str, Any]:
    caught = wait_applied(sc.r, {u: len(v) for u, v in feeder.expected().items()}, timeout=150)
    time.sleep(1.0)
    return finish(name, report, check_state(sc.r, feeder), check_recs(sc.s, feeder, fault_at, timeout=90), **extra,
                  caught_up_s=round(caught - fault_at, 2) if caught > 0 else None)


@pytest.mark.timeout(180)
def test_a_producer_retry_triggers_no_second_recommendation(scenario: Callable[..., Scenario],
                                                            report: dict[str, Any]) -> None:
    """The demo's fault-free "duplicates": the same event sent again (a producer's retry: same
    event_id, a new offset) produced a second recommendation with the same trigger. Its first
    copy was the trigger; the retry is skipped in state and in the output."""
    sc = scenario(buffer_len=4000)
    w = sc.worker("w")
    f = sc.feeder(n_users=4)
    w.wait_ready()
    first = [f.make() for _ in range(8)]
    f.send_all(first)
    read_topic(sc.s, sc.s.recs_topic, lambda recs: len(recs) >= 4, timeout=60, linger_s=0)  # answered, one batch
    f.send_all(first[:4])  # the producer retries four of them, later, in batches of their own
    time.sleep(1.5)
    f.send_all([f.make() for _ in range(4)])
    row = _settle(sc, f, time.time(), "producer_retry", report, retries=metric(w, "attnrec_events_retry_total"))
    assert row["recs_repeated"] == 0 and row["recs_missing"] == 0, row
    assert row["lost"] == 0 and row["duplicated_in_state"] == 0, row
    assert row["retries"] >= 4, row


@pytest.mark.timeout(300)
def test_zombie_worker_paused_past_its_session_is_fenced(scenario: Callable[..., Scenario],
                                                          report: dict[str, Any]) -> None:
    """Worker A paused (SIGSTOP) longer than its session timeout: its partitions move to B. A
    resumes with batches in hand; the group coordinator refuses their offsets (A's generation is
    not the group's any more, KIP-447), so their transactions abort and nothing A does after the
    pause reaches a committed consumer or the offsets."""
    sc = scenario(buffer_len=4000)
    a, b = sc.worker("a"), sc.worker("b")
    f = sc.feeder()
    a.wait_ready()
    b.wait_ready()
    f.start(n=3000, rate=200)
    wait_progress(sc.r, f, 800)
    fault_at = time.time()
    os.killpg(a.proc.pid, signal.SIGSTOP)
    time.sleep(SESSION_TIMEOUT_S + 6)
    os.killpg(a.proc.pid, signal.SIGCONT)
    f.join()
    row = _settle(sc, f, fault_at, "zombie_fenced", report, fenced=metric(a, "attnrec_producers_fenced_total"),
                 void_parts=metric(a, "attnrec_batch_parts_void_total"))
    assert_exact(row, a.tail() + b.tail())


@pytest.mark.timeout(300)
def test_broker_paused_past_the_session_timeout(stack: Any, scenario: Callable[..., Scenario],
                                                report: dict[str, Any]) -> None:
    """The broker frozen (SIGSTOP) longer than the session timeout, then resumed: transactions in
    flight fail or time out and are redone; nothing is lost or repeated."""
    sc = scenario(buffer_len=4000)
    w = sc.worker("w")
    f = sc.feeder()
    w.wait_ready()
    f.start(n=2500, rate=200)
    wait_progress(sc.r, f, 800)
    pid = int((stack.root / "kafka.pid").read_text())
    fault_at = time.time()
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(SESSION_TIMEOUT_S + 5)
    finally:
        os.kill(pid, signal.SIGCONT)
    f.join(timeout=300)
    row = _settle(sc, f, fault_at, "broker_paused", report)
    assert_exact(row, w.tail())


@pytest.mark.timeout(420)
def test_rebalance_storm_under_load(scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:
    """Workers joining and leaving every few seconds while events flow: each rebalance moves
    partitions (and their transactional ids) between workers."""
    sc = scenario(buffer_len=4000)
    base = sc.worker("base")
    f = sc.feeder()
    base.wait_ready()
    f.start(n=5000, rate=150)
    wait_progress(sc.r, f, 300)
    fault_at = time.time()
    for k in range(4):  # a worker joins, another leaves (SIGTERM, or SIGKILL every other time)
        joiner = sc.worker(f"storm{k}")
        time.sleep(5)
        if k % 2:
            joiner.kill()
        else:
            joiner.terminate(timeout=60)
        time.sleep(3)
    f.join(timeout=300)
    row = _settle(sc, f, fault_at, "rebalance_storm", report, rebalances=8)
    assert_exact(row, base.tail())


@pytest.mark.timeout(300)
def test_redis_replaced_by_an_empty_instance_pauses_and_says_so(scenario: Callable[..., Scenario],
                                                                tmp_path: Path, report: dict[str, Any]) -> None:
    """A failover to a fresh, empty Redis: the worker must not rebuild buffers from nothing. It
    pauses (nothing applied, recommended or committed), /readyz says why and the metric is up;
    once the operator restores a state (here: accepts it by writing the marker), it resumes and
    the events that waited are processed exactly once."""
    own = LocalStack(tmp_path / "redis", redis_port=free_port())
    own.start_redis()
    try:
        sc = scenario(buffer_len=4000, redis_url=own.redis_url)
        w = sc.worker("w")
        f = sc.feeder(n_users=10)
        w.wait_ready()
        f.send_all([f.make() for _ in range(100)])
        assert wait_applied(sc.r, {u: len(v) for u, v in f.expected().items()}, timeout=60) > 0
        own.stop_redis(kill=True)
        for p in own.redis_dir.rglob("*"):  # the replacement has no data at all
            if p.is_file():
                p.unlink()
        own.start_redis()
        later = [f.make() for _ in range(50)]
        f.send_all(later)
        time.sleep(8)  # the worker had time to (wrongly) apply them
        code, body = w.get("/readyz")
        ready = json.loads(body)
        r = sc.r
        keys = r.keys("{u:*")
        recs_after = [orjson.loads(m.value) for m in read_topic(sc.s, sc.s.recs_topic, lambda _: False, timeout=3)
                      if orjson.loads(m.value)["trigger_event_id"] in {e.event_id for e in later}]
        paused = {"readyz": code, "state_error": ready.get("state_error"), "user_keys": len(keys),
                  "recs_for_waiting_events": len(recs_after), "state_lost_metric": metric(w, "attnrec_redis_state_lost")}
        assert code == 503 and "Redis holds none of attnrec's state" in (ready.get("state_error") or ""), paused
        assert not keys and not recs_after and paused["state_lost_metric"] == 1, paused
        assert "ATTNREC_REDIS_EMPTY_OK" in w.tail(20000), "the log must say what the operator can do"
        r.set(STATE_KEY, json.dumps({"by": "test: the operator accepts the empty instance"}))  # resume
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not r.exists(user_keys(later[-1].user_id)[0]):
            time.sleep(0.3)
        got = {orjson.loads(m.value)["trigger_event_id"] for m in read_topic(sc.s, sc.s.recs_topic, lambda _: False,
                                                                              timeout=5)}
        finish("redis_empty_failover", report, {"paused": paused}, {},
               resumed_recs=len(got & {e.event_id for e in later}))
        assert r.exists(user_keys(later[-1].user_id)[0]), w.tail()
        assert got & {e.event_id for e in later}, "recommendations did not resume after the state was restored"
    finally:
        own.stop_redis(kill=True)



@pytest.mark.timeout(240)
def test_buffers_from_before_the_state_marker_are_adopted(scenario: Callable[..., Scenario],
                                                          report: dict[str, Any]) -> None:
    """An upgrade: Redis holds buffers written by a version without the state marker, and the
    group has committed offsets. That is state, not an empty failover: the worker marks it and
    goes on (the demo's stack, kept between runs, is such a case)."""
    sc = scenario(buffer_len=4000)
    f = sc.feeder(n_users=5)
    w = sc.worker("old")
    w.wait_ready()
    f.send_all([f.make() for _ in range(20)])
    assert wait_applied(sc.r, {u: len(v) for u, v in f.expected().items()}, timeout=60) > 0
    assert w.terminate() == 0
    upgraded_at = time.time()
    sc.r.delete(STATE_KEY)  # as a version from before the marker left it
    w2 = sc.worker("new")
    ready = w2.wait_ready()
    f.send_all([f.make() for _ in range(20)])
    caught = wait_applied(sc.r, {u: len(v) for u, v in f.expected().items()}, timeout=60)
    assert caught > 0 and ready["state_error"] is None, w2.tail()
    assert sc.r.exists(STATE_KEY) and "before the state marker" in w2.tail(20000)
    assert_exact(_settle(sc, f, upgraded_at, "pre_marker_upgrade", report), w2.tail())


def test_the_previous_owners_late_commit_is_taken_over_not_fled(stack: Any, names: dict[str, str],
                                                                registry_with_model: Path) -> None:
    """A worker that leaves may commit its last batch on its way out, after the partition's new
    owner fetched its start position. The new owner reads the committed offset stable before its
    first commit of the partition (KIP-447's require_stable: it waits while the old owner's
    transaction is open), skips what the previous owner finished and goes on from there."""
    s = settings_for(stack, names, registry_with_model, partitions=1)
    ensure_topics(s)

    def outbox(txn: Transactions, lo: int, hi: int) -> Outbox:
        epoch = txn.epoch(0)
        assert epoch is not None
        out = Outbox(deferred=True).cover([RawRecord(s.clicks_topic, 0, o, b"u", b"{}", epoch=epoch) for o in range(lo, hi)])
        out.records = [(s.recs_topic, str(o).encode(), b"{}", None, 0, o) for o in range(lo, hi)]  # one per event
        return out

    async def commit(txn: Transactions, lo: int, hi: int) -> tuple[bool, Outbox]:
        out = outbox(txn, lo, hi)
        txn.enqueue(out)
        assert out.done is not None
        return await out.done, out

    async def main() -> tuple[bool, Outbox, float]:
        old, new = Transactions(s), Transactions(s)
        try:
            old.assigned([0])
            assert (await commit(old, 0, 10))[0]
            # the group moves partition 0 to the new owner, whose consumer starts at the committed
            # offset, 10; the old owner's last batch is still in its transaction ...
            producer = await old._producer_started()
            await producer.begin_transaction()
            for o in range(10, 15):
                await producer.send(s.recs_topic, key=str(o).encode(), value=b"{}")
            from aiokafka import TopicPartition
            await producer.send_offsets_to_transaction({TopicPartition(s.clicks_topic, 0): 15}, old.group())
            new.assigned([0])

            async def late() -> None:
                await asyncio.sleep(1.0)
                await producer.commit_transaction()  # ... and commits a second later

            t0 = time.monotonic()
            task = asyncio.ensure_future(late())
            first, _ = await commit(new, 10, 13)  # all done by the old owner: nothing to commit
            waited = time.monotonic() - t0
            await task
            assert not first
            ok, out = await commit(new, 13, 20)  # partly done
            return ok, out, waited
        finally:
            await old.stop()
            await new.stop()

    ok, out, waited = asyncio.run(main())
    assert ok, "the new owner gave its partition up"
    assert waited >= 0.9, f"the new owner committed before the old owner's transaction ended ({waited:.2f}s)"
    assert committed_offsets(s, s.group_id, s.clicks_topic)[0] == 20
    got = read_topic(s, s.recs_topic, lambda recs: len(recs) >= 20, timeout=30)
    keys = sorted(int(r.key) for r in got)
    assert keys == list(range(20)), f"each event's record exactly once: {keys}"
    assert out.floors == {0: 15}
