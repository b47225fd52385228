"""The full set of fault scenarios on the 3-broker Kafka and the Redis Cluster (``make faults``;
deselected from ``make test``, which runs the short one in ``test_cluster.py``).

- the broker leading a partition of ``clicks`` killed (kill -9) under load, then restarted;
- that broker paused (SIGSTOP) past its session timeout, then resumed;
- a Redis master killed (kill -9): its replica is promoted while the worker retries the batches
  whose slots moved; the old master comes back as a replica;
- a failover that lost writes the master had acknowledged (its replica was cut off from it):
  the worker detects it, pauses and reports what to replay, serves nothing from the incomplete
  buffers; after the replay state is exact again (the replay repeats recommendations of
  replayed events only: counted);
- a worker added and one removed while a broker is down.

Each runs under a stream that lasts until 5 s after the fault ends, checks state and output with
``tests/faultkit.py`` (0 lost, 0 duplicated in state; read committed, 0 recommendations missing,
0 repeated) and reports its figures (docs/RELIABILITY.md, "On a 3-broker Kafka and a Redis Cluster").
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from attnrec.stream.core.buffer import user_keys

from attnrec.redis_util import key_slot, slot_tags
from tests.faultkit import (
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
from tests.integration.test_cluster import partition_leader, wait_promoted

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.cluster_full,
              pytest.mark.usefixtures("fast_group_eviction")]  # fmt: skip


def _load(sc: Scenario, rate: float = 150.0) -> tuple[Any, Any]:
    """A worker, and a stream at ``rate``/s that goes on until :func:`_settle` ends it: the
    fault lands under load however slowly the worker starts on a busy box."""
    w = sc.worker("w")
    feeder = sc.feeder()
    w.wait_ready()
    feeder.start(n=None, rate=rate)
    wait_progress(sc.r, feeder, 600)
    return w, feeder


def _settle(sc: Scenario, feeder: Any, fault_at: float, sent_at_fault: int, name: str, report: dict[str, Any],
            **extra: Any) -> dict[str, Any]:  # fmt: skip
    """Keep the load 5 s more after the fault is over, end it, wait until every acknowledged
    event is in Redis, then account for state and output."""
    time.sleep(5)
    feeder.stop(timeout=180)
    assert feeder.error is None, f"the producer failed: {feeder.error!r}"
    sent_during = feeder.seq - sent_at_fault
    assert sent_during >= 300, f"only {sent_during} events were sent after the fault: not under load"
    caught = wait_applied(sc.r, {u: len(v) for u, v in feeder.expected().items()}, timeout=180)
    time.sleep(1.0)
    row = finish(name, report, check_state(sc.r, feeder), check_recs(sc.s, feeder, fault_at, timeout=120), **extra,
                 sent_after_fault=sent_during, caught_up_s=round(caught - fault_at, 2) if caught > 0 else None)
    if row["recs_repeated"]:  # which triggers, when sent, where their recommendations are: to find the cause
        recs = read_topic(sc.s, sc.s.recs_topic, lambda _: False, timeout=5)
        by: dict[str, list[str]] = {}
        for m in recs:
            t = orjson.loads(m.value)["trigger_event_id"]
            by.setdefault(t, []).append(f"{m.partition}@{m.offset} emitted {orjson.loads(m.value)['emitted_ts']}")
        row["repeat_examples"] = {t: [round(feeder.sent_at.get(t, 0) - fault_at, 2), *v]
                                  for t, v in list((t, v) for t, v in by.items() if len(v) > 1)[:8]}  # fmt: skip
    return row


def _assignments(workers: list[Any]) -> list[int]:
    out = []
    for w in workers:
        try:
            out.append(int(json.loads(w.get("/readyz")[1])["assigned_partitions"]))
        except (OSError, ValueError, KeyError):
            out.append(-1)
    return out


def _wait_split(workers: list[Any], partitions: int, timeout: float = 90) -> list[int]:
    deadline = time.monotonic() + timeout
    got: list[int] = []
    while time.monotonic() < deadline:
        got = _assignments(workers)
        if sum(got) == partitions and all(n > 0 for n in got):
            return got
        time.sleep(0.5)
    raise AssertionError(f"partitions not split over {len(workers)} workers: {got}")


# ----------------------------------------------------------------------------- brokers
@pytest.mark.timeout(420)
def test_partition_leader_killed_and_restarted(cluster_stack: Any, cluster_scenario: Callable[..., Scenario],
                                               report: dict[str, Any]) -> None:  # fmt: skip
    """kill -9 of the broker leading partition 0 of ``clicks`` under load: its partitions'
    leadership moves to an in-sync follower, the transaction and group coordinators it held
    move too; the worker carries on by itself. The broker is restarted 10 s later and catches up."""
    sc = cluster_scenario(buffer_len=4000)
    w, feeder = _load(sc)
    leader = partition_leader(sc.s, sc.s.clicks_topic, 0)
    fault_at, sent_at_fault = time.time(), feeder.seq
    cluster_stack.stop_broker(leader, kill=True)
    moved = _wait_leader_moved(sc, cluster_stack, leader)
    time.sleep(max(0.0, 10 - (time.time() - fault_at)))
    cluster_stack.start_broker(leader)
    back_s = time.time() - fault_at
    row = _settle(sc, feeder, fault_at, sent_at_fault, "cluster_leader_sigkill", report, broker=leader,
                  leader_moved_s=round(moved - fault_at, 2), broker_down_s=round(back_s, 2),
                  transient_retries=metric(w, "attnrec_batch_retries_total"))  # fmt: skip
    assert w.proc.poll() is None, w.tail()
    assert_exact(row, w.tail())


@pytest.mark.timeout(420)
def test_partition_leader_paused_past_its_session_timeout(cluster_stack: Any, cluster_scenario: Callable[..., Scenario],
                                                          report: dict[str, Any]) -> None:  # fmt: skip
    """The leader of partition 0 stops answering without closing its connections (SIGSTOP) for
    15 s, past the brokers' session timeout (9 s): the controller fences it and moves its
    leaderships; requests in flight to it time out. Then it resumes, finds itself fenced,
    rejoins and catches up as a follower."""
    sc = cluster_scenario(buffer_len=4000)
    w, feeder = _load(sc)
    leader = partition_leader(sc.s, sc.s.clicks_topic, 0)
    fault_at, sent_at_fault = time.time(), feeder.seq
    cluster_stack.pause_broker(leader)
    try:
        moved = _wait_leader_moved(sc, cluster_stack, leader)
        time.sleep(max(0.0, 15 - (time.time() - fault_at)))
    finally:
        cluster_stack.pause_broker(leader, pause=False)
    row = _settle(sc, feeder, fault_at, sent_at_fault, "cluster_leader_paused", report, broker=leader, paused_s=15,
                  leader_moved_s=round(moved - fault_at, 2),
                  transient_retries=metric(w, "attnrec_batch_retries_total"))  # fmt: skip
    assert w.proc.poll() is None, w.tail()
    assert_exact(row, w.tail())


def _wait_leader_moved(sc: Scenario, stack: Any, old: int, timeout: float = 60) -> float:
    """When partition 0 of ``clicks`` has a leader other than ``old``, asked of the other
    brokers (a paused one would hold the question until it times out)."""
    others = ",".join(f"127.0.0.1:{n.port}" for n in stack.kafka_nodes if n.node_id != old)
    s = sc.s.model_copy(update={"kafka_bootstrap": others})
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if partition_leader(s, sc.s.clicks_topic, 0) not in (old, -1):
                return time.time()
        except Exception:  # the metadata is moving
            pass
        time.sleep(0.3)
    raise AssertionError(f"partition 0 still led by broker {old} after {timeout}s")


# ----------------------------------------------------------------------------- Redis
@pytest.mark.timeout(420)
def test_redis_master_killed_replica_promoted(cluster_stack: Any, cluster_scenario: Callable[..., Scenario],
                                              report: dict[str, Any]) -> None:  # fmt: skip
    """kill -9 of the Redis master serving a third of the users: its replica is promoted after
    the cluster's node timeout (3 s here). Meanwhile every batch touching those slots fails
    (connection refused, then CLUSTERDOWN / MOVED while the slots move) and is retried with
    backoff: the worker pauses, applies nothing twice, and resumes by itself once the client
    sees the new master. The old master comes back as the new one's replica."""
    sc = cluster_scenario(buffer_len=4000)
    w, feeder = _load(sc)
    master = cluster_stack.master_of(key_slot(user_keys(feeder.user(0))[0]))
    fault_at, sent_at_fault = time.time(), feeder.seq
    cluster_stack.stop_redis_node(master.port, kill=True)
    promoted = wait_promoted(cluster_stack, master)
    resumed = _wait_buffer_grows(sc, feeder.user(0), fault_at)
    cluster_stack.start_redis_node(master.port)
    cluster_stack.wait_cluster_ok(90)
    row = _settle(sc, feeder, fault_at, sent_at_fault, "cluster_redis_master_sigkill", report,
                  replica_promoted_s=round(promoted - fault_at, 2), slot_writes_resumed_s=round(resumed - fault_at, 2),
                  transient_retries=metric(w, "attnrec_batch_retries_total"))  # fmt: skip
    assert w.proc.poll() is None, w.tail()
    assert row["transient_retries"] > 0, "the worker never saw the master gone?"
    assert_exact(row, w.tail())


def _wait_buffer_grows(sc: Scenario, user: str, since: float, timeout: float = 90) -> float:
    """When ``user``'s buffer grows again (its slot's master answers writes once more)."""
    n0 = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            n = sc.r.llen(user_keys(user)[0])
            if n0 is None:
                n0 = n
            elif n > n0:
                return time.time()
        except Exception:  # the slot is moving
            pass
        time.sleep(0.2)
    raise AssertionError(f"{user}'s buffer did not grow again within {timeout}s")


@pytest.mark.timeout(480)
def test_a_failover_that_lost_writes_is_detected_reported_and_replayed(
        cluster_stack: Any, cluster_scenario: Callable[..., Scenario], report: dict[str, Any]) -> None:  # fmt: skip
    """Replication is asynchronous: a master acknowledges a write before its replica has it. Here
    the replica is cut off (stopped, its master's send buffers filled by a 32 MB value, so what
    follows stays in the master's memory), the worker's batches go on being acknowledged and
    committed, then the master is killed and the stale replica promoted: those batches' events
    are gone from the users' buffers, and Kafka will not redeliver them. The worker's next write
    to those slots finds their progress below what it applied: it pauses (/readyz 503, the
    metric, the log naming each partition and the offset to replay from) and publishes nothing
    computed from the incomplete buffers. The operator replays (the group's offsets reset to the
    named ones, a worker started): every event is in Redis exactly once again. The replayed
    events had their recommendations published before the failover, and a replay publishes them
    again (a redelivered event's recommendation is produced again: the worker takes its first
    one for aborted). So the accounting: 0 lost, 0 duplicated in state, 0 missing, 0 served from
    an incomplete buffer, and every repeated recommendation is of an event in the replayed
    range (partition, offset at or past the one named), none of any other."""
    sc = cluster_scenario(buffer_len=4000)
    s, r = sc.s, sc.r
    w, feeder = _load(sc)
    master = cluster_stack.master_of(key_slot(user_keys(feeder.user(0))[0]))
    (replica,) = cluster_stack.replicas_of(master)
    on_master = [feeder.user(i) for i in range(feeder.n_users)
                 if any(a <= key_slot(user_keys(feeder.user(i))[0]) <= b for a, b in master.slots)]  # fmt: skip
    cluster_stack.pause_redis_node(replica.port)
    cut_at, sent_at_fault = time.time(), feeder.seq
    blob = f"attnrec-test-blob:{{{slot_tags()[master.slots[0][0]]}}}"
    mr = cluster_stack._client(master.port, timeout=30)  # noqa: SLF001
    def held() -> int:
        return sum(mr.llen(user_keys(u)[0]) for u in on_master)

    try:
        mr.set(blob, b"x" * (32 << 20))
        # the worker's batches to this master from now on: acknowledged, committed, never replicated
        # (the blob fills what the kernel buffers for the stopped replica); wait for 100 entries
        cut_len, deadline = held(), time.monotonic() + 60
        while held() < cut_len + 100 and time.monotonic() < deadline:
            time.sleep(0.2)
        mr.execute_command("CLIENT", "PAUSE", "10000", "WRITE")  # what the master has now is what it had when killed
        before = {u: set(mr.lrange(user_keys(u)[0], 0, -1)) for u in on_master}
        killed_at = time.time()
        cluster_stack.stop_redis_node(master.port, kill=True)
    finally:
        cluster_stack.pause_redis_node(replica.port, pause=False)
    promoted = wait_promoted(cluster_stack, master)
    lost_entries = _lost_entries(r, before)
    assert lost_entries, "the failover lost nothing: the scenario did not cut the replica off"
    # the worker notices at its next write to one of those slots, and says so
    deadline = time.monotonic() + 60
    ready: dict[str, Any] = {}
    while time.monotonic() < deadline:
        code, body = w.get("/readyz")
        ready = json.loads(body)
        if code == 503 and "lost writes" in (ready.get("state_error") or ""):
            break
        time.sleep(0.5)
    detected_at = time.time()
    assert "lost writes" in (ready.get("state_error") or ""), f"{ready}\n{w.tail()}"
    assert metric(w, "attnrec_redis_lost_writes") == 1
    replay = {int(p): int(o) for p, o in re.findall(rf"{re.escape(s.clicks_topic)}:(\d+): .*?replay from offset (\d+)",
                                                   ready["state_error"])}  # fmt: skip
    assert replay, ready["state_error"]
    feeder.stop(timeout=180)
    assert feeder.error is None, f"the producer failed: {feeder.error!r}"
    sent_during = feeder.seq - sent_at_fault
    time.sleep(5)  # paused: whatever it would have served from the incomplete buffers would show now
    served_wrong = _recs_after_a_gap(s, feeder, r, killed_at)
    # the operator replays: the worker stopped, the group's offsets reset to the named ones, a worker started
    w.kill()
    _reset_offsets(s, replay)
    w2 = sc.worker("w2")
    w2.wait_ready()
    caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=180)
    time.sleep(1.0)
    lost_ids = {ev.event_id for evs in feeder.expected().values() for ev in evs if ev.ts in lost_entries}
    repeated = _repeated_triggers(s)
    where = {orjson.loads(m.value)["event_id"]: (m.partition, m.offset)
             for m in read_topic(s, s.clicks_topic, lambda _: False, timeout=5)}  # fmt: skip
    replayed = {e for e, (p, o) in where.items() if p in replay and o >= replay[p]}
    row = finish("cluster_redis_failover_lost_writes", report, check_state(r, feeder),
                 check_recs(s, feeder, cut_at, timeout=120), replica_cut_off_s=round(promoted - cut_at, 2),
                 detected_after_promotion_s=round(detected_at - promoted, 2), lost_by_failover=len(lost_entries),
                 partitions_replayed=len(replay), served_from_incomplete_buffers=served_wrong,
                 repeated_of_lost_events=len(repeated & lost_ids), repeated_in_replayed_range=len(repeated & replayed),
                 repeated_outside_replayed_range=len(repeated - replayed), replayed_events=len(replayed),
                 sent_after_fault=sent_during,
                 caught_up_s=round(caught - detected_at, 2) if caught > 0 else None)  # fmt: skip
    cluster_stack.start_redis_node(master.port)
    cluster_stack.wait_cluster_ok(90)
    assert sent_during >= 300, f"only {sent_during} events were sent after the replica was cut off: not under load"
    assert served_wrong == 0, row
    assert row["lost"] == 0 and row["duplicated_in_state"] == 0 and row["unknown_in_state"] == 0, f"{row}\n{w2.tail()}"
    assert row["users_misordered"] == 0 and row["recs_missing"] == 0 and row["users_without_final_rec"] == 0, row
    assert lost_ids <= replayed, "the offsets named for the replay do not cover every lost event"
    assert row["repeated_outside_replayed_range"] == 0, f"recommendations repeated outside the replay: {row}"
    assert row["recs_repeated"] == row["repeated_in_replayed_range"], row


def _lost_entries(r: Any, before: dict[str, set[bytes]]) -> set[int]:
    """The ts of the buffer entries the killed master had and the promoted replica has not."""
    from attnrec.stream.core.entries import decode_entry

    deadline = time.monotonic() + 30
    while True:
        try:
            after = {u: set(r.lrange(user_keys(u)[0], 0, -1)) for u in before}
            break
        except Exception:  # the client still re-reads the slots
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    return {decode_entry(x).ts for u, had in before.items() for x in had - after[u]}


def _repeated_triggers(s: Any) -> set[str]:
    """Trigger event ids with more than one recommendation, read committed."""
    from collections import Counter

    c = Counter(orjson.loads(m.value)["trigger_event_id"] for m in read_topic(s, s.recs_topic, lambda _: False, timeout=5))
    return {t for t, n in c.items() if n > 1}


def _recs_after_a_gap(s: Any, feeder: Any, r: Any, since: float) -> int:
    """Recommendations (read committed) computed after ``since`` (the failover) from a buffer
    that missed events: a trigger later than an acknowledged event of its user that is not in
    the user's buffer."""
    from attnrec.stream.core.entries import decode_entry

    expected = feeder.expected()
    gaps = {}
    for u, evs in expected.items():
        have = {decode_entry(x).ts for x in r.lrange(user_keys(u)[0], 0, -1)}
        missing = [ev.ts for ev in evs if ev.ts not in have]
        if missing:
            gaps[u] = min(missing)
    ts = {ev.event_id: ev.ts for evs in expected.values() for ev in evs}
    recs = [orjson.loads(m.value) for m in read_topic(s, s.recs_topic, lambda _: False, timeout=5)]
    return sum(1 for p in recs if p["emitted_ts"] / 1000 > since and p["user_id"] in gaps
               and ts.get(p["trigger_event_id"], 0) > gaps[p["user_id"]])  # fmt: skip


def _reset_offsets(s: Any, offsets: dict[int, int], timeout: float = 60) -> None:
    """Commit ``offsets`` (partition -> offset) for the workers' group, once it has no member
    (kafka-consumer-groups.sh --reset-offsets --to-offset does the same)."""
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    from attnrec.kafka_util import admin_client

    deadline = time.monotonic() + timeout
    admin = admin_client(s)
    try:
        state = None
        while time.monotonic() < deadline:
            state = admin.describe_groups([s.group_id]).get(s.group_id, {}).get("group_state")
            if str(state).lower() in ("empty", "dead"):
                break
            time.sleep(0.5)
        assert str(state).lower() in ("empty", "dead"), f"the group still has members ({state})"
        res = admin.alter_group_offsets(s.group_id, {TopicPartition(s.clicks_topic, p): OffsetAndMetadata(o, "", -1)
                                                     for p, o in offsets.items()})  # fmt: skip
        assert all(e.__name__ == "NoError" for e in res.values()), res
    finally:
        admin.close()


# ----------------------------------------------------------------------------- the group
@pytest.mark.timeout(480)
def test_a_worker_added_and_one_removed_while_a_broker_is_down(cluster_stack: Any,
                                                                cluster_scenario: Callable[..., Scenario],
                                                                report: dict[str, Any]) -> None:  # fmt: skip
    """A broker is killed under load; while it is down a second worker joins (a rebalance) and the
    first one leaves with SIGTERM (another); then the broker comes back."""
    sc = cluster_scenario(buffer_len=4000, partitions=8)
    w1, feeder = _load(sc)
    broker = partition_leader(sc.s, sc.s.clicks_topic, 0)
    fault_at, sent_at_fault = time.time(), feeder.seq
    cluster_stack.stop_broker(broker, kill=True)
    w2 = sc.worker("w2")
    w2.wait_ready(120)
    split = _wait_split([w1, w2], 8)
    exit_code = w1.terminate(timeout=60)
    _wait_split([w2], 8)
    cluster_stack.start_broker(broker)
    back_s = time.time() - fault_at
    row = _settle(sc, feeder, fault_at, sent_at_fault, "cluster_rebalance_broker_down", report, broker=broker, split=split,
                  leaver_exit=exit_code, broker_down_s=round(back_s, 2))  # fmt: skip
    assert exit_code == 0, w1.tail()
    assert_exact(row, w2.tail())
