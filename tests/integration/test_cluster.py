"""attnrec on real distributed engines: a 3-broker Kafka (replication 3, min.insync.replicas 2)
and a Redis Cluster of 3 masters and 3 replicas (the ``cluster_stack`` fixture, started for these
tests and stopped after them).

- Every Lua script of the worker runs on the cluster: Redis refuses a script whose keys span
  slots (CROSSSLOT) or that touches a key of another slot, so each one running here is the
  proof that it stays in one slot; the test fails for a script it did not run.
- The short fault scenario of ``make test``: under load, kill -9 the Redis master serving a slot
  of active users (its replica is promoted), then the broker leading a partition of
  ``clicks``; then each acknowledged event is in Redis once and, read committed, every trigger
  has its recommendation once (``tests/faultkit.py``).
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from attnrec.stream.core.buffer import APPLIED, REDELIVERED, RETRY, RedisBuffers, user_keys
from attnrec.stream.core.groups import lost_writes_message, progress_key, state_key
from attnrec.stream.core.metrics import WorkerMetrics
from attnrec.stream.stages.catalog import CatalogStore
from attnrec.stream.stages.online import ONLINE_KEY, OnlineStage
from attnrec.stream.stages.trending import SHARDS, Trending, shard_of

from attnrec.errors import LostWritesError, StateLostError, TransientError
from attnrec.events import CatalogEvent, ClickEvent
from attnrec.redis_util import key_slot, redis_client
from attnrec.settings import Settings
from tests.faultkit import Scenario, assert_exact, check_recs, check_state, finish, metric, wait_applied, wait_progress
from tests.feeding import T0

pytestmark = pytest.mark.integration


def worker_scripts() -> dict[str, str]:
    """Every Lua script of the worker's modules: ``module.NAME`` -> its text (``*_LUA``)."""
    import attnrec.stream

    out = {}
    for mod in pkgutil.walk_packages(attnrec.stream.__path__, "attnrec.stream."):
        m = importlib.import_module(mod.name)
        for name, v in vars(m).items():
            if name.endswith("_LUA") and isinstance(v, str) and getattr(m, "__name__", "") == mod.name:
                out[f"{mod.name}.{name}"] = v
    return out


@pytest.mark.timeout(180)
async def test_every_script_runs_on_the_cluster_within_one_slot(cluster_stack: Any) -> None:
    s = Settings(redis_url=cluster_stack.redis_url)
    r = redis_client(s)
    await r.script_flush()  # every master forgets its scripts: each one below is loaded by running it
    tag = uuid.uuid4().hex[:6]
    try:
        # ---- the buffers: one call per slot, pipelined; markers and progress per slot
        buf = RedisBuffers(r, max_len=10, dedupe_window=4)
        await buf.mark_state("test")
        assert await buf.has_state()
        users = [f"cl-{tag}-{i}" for i in range(120)]
        slots = {key_slot(user_keys(u)[0]) for u in users}
        assert len({cluster_stack.master_of(sl).port for sl in slots}) == 3, "the users span every master"
        evs = [(ClickEvent(f"{u}-e{k}", u, f"item-{k}", "view", T0 + k), f"clicks-{tag}:{i % 4}", 10 * i + k)
               for i, u in enumerate(users) for k in range(2)]  # fmt: skip
        res = await buf.apply(evs)
        assert res.codes == [APPLIED] * len(evs) and res.users == users
        assert all([e.item_id for e in res.buffers[u]] == ["item-1", "item-0"] for u in users)
        assert (await buf.apply(evs)).codes == [REDELIVERED] * len(evs)  # the same offsets again
        again = [(ev, f, off + 5) for ev, f, off in evs[:6]]  # the same events at new offsets: producer retries
        assert (await buf.apply(again)).codes == [RETRY] * 6
        await buf.store_recs({u: f'{{"user_id": "{u}"}}'.encode() for u in users})
        assert await buf.get_recs(users[7]) == f'{{"user_id": "{users[7]}"}}'.encode()
        # ---- with REDIS_WAIT_REPLICAS: each master written WAITs for its replica in the same pipeline
        waiting = RedisBuffers(r, max_len=10, dedupe_window=4, wait_replicas=1, wait_timeout_ms=2000)
        more = [(ClickEvent(f"{u}-w", u, "item-w", "view", T0 + 5), f"clicks-{tag}:{i % 4}", 10 * i + 8)
                for i, u in enumerate(users)]  # fmt: skip
        assert (await waiting.apply(more)).codes == [APPLIED] * len(more)
        with pytest.raises(TransientError, match="replicas acknowledge"):  # more replicas than there are
            await RedisBuffers(r, max_len=10, wait_replicas=2, wait_timeout_ms=200).apply(
                [(ClickEvent(f"{users[0]}-w2", users[0], "item-w", "view", T0 + 6), f"clicks-{tag}:0", 3)])

        # ---- a slot that lost writes Redis had acknowledged: refused, reported, audited
        u = users[3]
        sl, field = key_slot(user_keys(u)[0]), f"clicks-{tag}:3"
        await r.hset(progress_key(sl), field, 5)  # as a failover to a replica that missed the last writes leaves it
        with pytest.raises(LostWritesError, match="LOSTWRITES"):
            await buf.apply([(ClickEvent(f"{u}-late", u, "item-9", "view", T0 + 9), field, 10 * 3 + 7)])
        lost = await buf.audit()
        assert [(w.slot, w.field, w.have, w.applied) for w in lost] == [(sl, field, 5, 31)]
        assert "replay from offset 6" in lost_writes_message(lost)
        # ---- a slot without its state marker (its master's data lost): refused, the guard told
        v = users[4]
        sv = key_slot(user_keys(v)[0])
        await r.delete(state_key(sv))
        with pytest.raises(StateLostError):
            await buf.apply([(ClickEvent(f"{v}-late", v, "item-9", "view", T0 + 9), f"clicks-{tag}:0", 99)])
        present, checked = await buf.state_markers()
        assert checked - present == 1 and sv in buf.markers.missing
        await buf.mark_state("test: the operator accepts")  # every slot marked again, the progress check reset
        assert await buf.has_state()
        await buf.apply([(ClickEvent(f"{u}-late", u, "item-9", "view", T0 + 9), field, 10 * 3 + 7)])

        # ---- trending: the catalogue spread over its shards, a room in its own slot
        tr = Trending(r, window_s=60)
        counts = tr.counter()
        t = 1_600_000_000_000 + int(uuid.uuid4().int % 10**9)
        items = [f"tr-{tag}-{i}" for i in range(60)]
        counts.add([ClickEvent(f"t{i}-{k}", "u", it, "view", t) for i, it in enumerate(items) for k in range(i % 7)]
                   + [ClickEvent("g", "u", items[0], "gift", t, {"room_id": f"room-{tag}"})])
        assert len({shard_of(it) for it in items}) == SHARDS
        await tr.write(counts)
        want = sorted(((it, float(i % 7 + (3 if i == 0 else 0))) for i, it in enumerate(items) if i % 7 or i == 0),
                      key=lambda p: (p[1], p[0]), reverse=True)[:10]  # fmt: skip
        assert await tr.top(n=10, now_ms=t + 1000) == want
        assert await tr.top(f"room:room-{tag}", n=5, now_ms=t + 1000) == [(items[0], 3.0)]

        # ---- the catalogue's availability state and the online totals
        cat = CatalogStore(r)
        assert await cat.apply([CatalogEvent("c1", f"p-{tag}", "stock", 1000, 0, "toys", f"room-{tag}")]) == [True]
        other = CatalogStore(r)
        assert await other.refresh() and f"p-{tag}" in other.view.unavailable
        online = OnlineStage(r, WorkerMetrics(), policy_name=f"cl-{tag}")
        online.add("model|v1|n", 3)
        online.add("model|v1|ndcg", 1.5)
        await online.flush()
        assert (await r.hgetall(ONLINE_KEY + f"cl-{tag}"))[b"model|v1|n"] == b"3"

        # ---- every script of the worker ran on the cluster (each master was taught it)
        for name, text in worker_scripts().items():
            sha = hashlib.sha1(text.encode()).hexdigest()
            assert all(await r.script_exists(sha)), f"{name} never ran on the cluster in this test"
    finally:
        await r.aclose()


@pytest.mark.faults
@pytest.mark.timeout(420)
def test_short_cluster_scenario_broker_kill_and_redis_failover(cluster_stack: Any, cluster_scenario: Callable[..., Scenario],
                                                                report: dict[str, Any]) -> None:  # fmt: skip
    """Under load: kill -9 the Redis master serving the first user's slot (the worker's batches
    touching its slots wait in the client's retries, or fail and are retried, until its replica
    is promoted), then kill -9 the
    broker leading partition 0 of ``clicks`` (leadership and coordinators move to the other two).
    One worker carries on by itself through both; afterwards every acknowledged event is in
    Redis once and, read committed, every trigger has one recommendation."""
    started = time.monotonic()
    sc = cluster_scenario(buffer_len=4000, partitions=4)
    s, r = sc.s, sc.r
    w = sc.worker("w")
    feeder = sc.feeder(n_users=40)
    w.wait_ready()
    feeder.start(n=3500, rate=200)
    wait_progress(r, feeder, 600)
    fault_at = redis_fault_at = time.time()
    master = cluster_stack.master_of(key_slot(user_keys(feeder.user(0))[0]))
    cluster_stack.stop_redis_node(master.port, kill=True)
    promoted_s = wait_promoted(cluster_stack, master)
    sent_at_promotion = feeder.seq
    leader = partition_leader(s, s.clicks_topic, 0)
    broker_fault_at = time.time()
    cluster_stack.stop_broker(leader, kill=True)
    feeder.join()
    caught = wait_applied(r, {u: len(v) for u, v in feeder.expected().items()}, timeout=180)
    time.sleep(1.0)
    row = finish("cluster_short_broker_kill_redis_failover", report, check_state(r, feeder),
                 check_recs(s, feeder, fault_at, timeout=120), broker_killed=leader,
                 redis_promoted_s=round(promoted_s - redis_fault_at, 2),
                 broker_killed_after_s=round(broker_fault_at - fault_at, 2), sent_at_promotion=sent_at_promotion,
                 caught_up_s=round(caught - fault_at, 2) if caught > 0 else None,
                 transient_retries=metric(w, "attnrec_batch_retries_total"),
                 wall_s=round(time.monotonic() - started, 1))  # fmt: skip
    assert w.proc.poll() is None, f"the worker died:\n{w.tail()}"
    assert sent_at_promotion < 3500 - 400, "the load ended before the broker was killed: the faults were not under load"
    assert_exact(row, w.tail())


# ----------------------------------------------------------------------------- helpers
def partition_leader(s: Settings, topic: str, partition: int) -> int:
    """The broker leading ``topic``'s ``partition`` now."""
    from attnrec.kafka_util import admin_client

    admin = admin_client(s)
    try:
        (desc,) = admin.describe_topics([topic])
        return int(next(p["leader_id"] for p in desc["partitions"] if p["partition_index"] == partition))
    finally:
        admin.close()


def wait_promoted(stack: Any, old_master: Any, timeout: float = 60.0) -> float:
    """Wait until a replica of ``old_master`` (a ClusterRole, now dead) serves its slots; when."""
    deadline = time.monotonic() + timeout
    slot = old_master.slots[0][0]
    while time.monotonic() < deadline:
        try:
            now = stack.master_of(slot)
            if now.port != old_master.port:
                return time.time()
        except Exception:  # the cluster is still deciding
            pass
        time.sleep(0.2)
    raise AssertionError(f"no replica took over slot {slot} from port {old_master.port} in {timeout}s")
