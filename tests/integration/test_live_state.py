"""The live-commerce state against the real Redis, through the worker's own batch path: the
availability state (applied, idempotent, shared by two workers, kept across a restart), the
policy's exclusions in the graph (unavailable, denied, cool-downs) and boosts, trending now as
the fallback, and the online evaluation's counters against a recomputation."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.stream.core.records import RawRecord
from attnrec.stream.stages.catalog import CATALOG_KEYS, CatalogStore

from attnrec.events import CatalogEvent
from attnrec.redis_util import redis_client
from attnrec.settings import Settings
from tests.helpers import BatchRun as Run

pytestmark = pytest.mark.integration


def _registry(root: Path, positions: str) -> Path:
    """A random-weight model: a window model (absolute positions) or an incremental one."""
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    ckpt = write_random_checkpoint(root / "ckpt", n_items=122, max_len=8, d_model=16, n_blocks=2, n_heads=2,
                                   positions=positions, n_samples=16, seed=5)
    export_checkpoint(ckpt, root / "registry", promote=True, force=True)
    return root / "registry"


@pytest.fixture
async def clean_catalog(stack: Any) -> Any:
    r = redis_client(Settings(redis_url=stack.redis_url))
    await r.delete(*CATALOG_KEYS)
    await r.set("attnrec:state", "test")
    yield r
    await r.delete(*CATALOG_KEYS)
    await r.aclose()


async def test_availability_is_applied_idempotently_shared_and_kept_across_a_restart(stack: Any, clean_catalog: Any) -> None:
    a, b = CatalogStore(redis_client(Settings(redis_url=stack.redis_url))), CatalogStore(clean_catalog)
    evs = [CatalogEvent("c1", "live-1", "live", 1000, category="music"),
           CatalogEvent("c2", "p-1", "stock", 1001, 0, "toys", "live-1"),
           CatalogEvent("c3", "p-2", "off_shelf", 1002)]
    assert await a.apply(evs) == [True, True, True]
    assert a.view.unavailable == {"p-1", "p-2"} and a.view.category == {"live-1": "music", "p-1": "toys"}
    assert await b.refresh() and b.view.unavailable == {"p-1", "p-2"}  # the other worker sees it
    version = a.view.version
    assert await a.apply(evs) == [True, True, True]  # redelivered: the same statuses again
    assert a.view.version == version and not await b.refresh()  # nothing changed, one GET said so
    assert await a.apply([CatalogEvent("c0", "p-1", "stock", 999, 5)]) == [False]  # older than what is applied
    assert a.view.unavailable == {"p-1", "p-2"}
    await a.apply([CatalogEvent("c4", "p-2", "on_shelf", 2000), CatalogEvent("c5", "live-1", "ended", 2001)])
    assert await b.refresh() and b.view.unavailable == {"p-1", "live-1"}
    restarted = CatalogStore(redis_client(Settings(redis_url=stack.redis_url)))  # a worker that starts now
    await restarted.refresh()
    assert restarted.view == b.view
    await a.r.aclose()
    await restarted.r.aclose()


@pytest.mark.parametrize("incremental", [False, True])
async def test_no_recommendation_holds_an_unavailable_denied_or_cooling_item(stack: Any, clean_catalog: Any, tmp_path: Path,
                                                                             incremental: bool) -> None:
    reg = _registry(tmp_path, "relative" if incremental else "absolute")
    s = Settings(redis_url=stack.redis_url, registry=reg, home=tmp_path, catalog=True, deny_categories="food")
    run = Run(s, reg)
    model = run.proc.model
    assert model is not None and model.incremental == incremental
    rng = random.Random(3)
    items = [i for i in model.item_ids[2:]]
    users = [f"live-{tmp_path.name}-u{k}" for k in range(20)]
    t = 1_764_300_000_000

    def events(rnd: int) -> list[dict[str, Any]]:
        return [{"event_id": f"{u}-{rnd}", "user_id": u, "item_id": rng.choice(items), "event_type": "click",
                 "ts": t + 1000 * rnd} for u in users]

    first = await run.batch(events(0))
    shown = {it["item_id"] for r in first for it in r["items"]}
    assert len(first) == len(users) and not any(r["fallback"] for r in first)
    # another worker ends half of what was shown and files a quarter under a denied category
    other = CatalogStore(clean_catalog)
    gone = sorted(shown)[: len(shown) // 2]
    food = sorted(shown)[len(shown) // 2 :][: len(shown) // 4]
    await other.apply([CatalogEvent(f"off-{i}", i, "off_shelf", t) for i in gone]
                      + [CatalogEvent(f"cat-{i}", i, "on_shelf", t, category="food") for i in food])
    for rnd in range(1, 6):
        recs = await run.batch(events(rnd))
        got = {it["item_id"] for r in recs for it in r["items"]}
        assert not got & set(gone), "an unavailable item was recommended"
        assert not got & set(food), "an item of a denied category was recommended"
        assert all(len(r["items"]) == s.top_k for r in recs)
    # back on the shelf: may be recommended again (it is no longer in the graph's exclusions)
    await other.apply([CatalogEvent(f"on-{i}", i, "on_shelf", t + 1) for i in gone])
    prep = await run.proc.prepare([RawRecord("clicks", 0, 10**6, b"x", orjson.dumps(events(9)[0]))])
    excl = prep.plan.full.exclude if prep.plan.full.users else prep.plan.step.exclude
    seen = {e.item_id for e in await run.buffers.get_buffer(users[0])}
    allowed = {model.item_index[i.encode()] for i in {*food, *seen}} | {0, 1}
    assert set(excl.ravel().tolist()) <= allowed  # the items back on the shelf are no longer excluded
    await run.proc.finish(prep)
    await run.buffers.r.aclose()


async def test_repeats_cool_down_and_boosts_reorder(stack: Any, clean_catalog: Any, tmp_path: Path) -> None:
    registry = _registry(tmp_path, "absolute")
    s = Settings(redis_url=stack.redis_url, registry=registry, home=tmp_path, exclude_seen=False,
                 repeat_cooldown_s=60, negative_cooldown_s=600)
    run = Run(s, registry)
    model = run.proc.model
    assert model is not None
    u, t = f"rep-{tmp_path.name}", 1_764_300_000_000
    a, b, c = model.item_ids[2:5]

    async def excluded(ev: dict[str, Any]) -> set[str]:
        records = [RawRecord("clicks", 0, run.offset, u.encode(), orjson.dumps(ev))]
        run.offset += 1
        prep = await run.proc.prepare(records)
        await run.proc.finish(prep)
        assert prep.plan is not None and prep.plan.full.users
        return {model.item_ids[i] for i in prep.plan.full.exclude.ravel().tolist() if i > 1}

    got = await excluded({"event_id": "1", "user_id": u, "item_id": a, "event_type": "click", "ts": t})
    assert a in got  # just clicked: cooling down
    got = await excluded({"event_id": "2", "user_id": u, "item_id": b, "event_type": "impression", "ts": t + 30_000})
    assert {a, b} <= got
    got = await excluded({"event_id": "3", "user_id": u, "item_id": c, "event_type": "view", "ts": t + 120_000})
    assert a not in got and b in got and c in got  # a's cool-down is over; b was shown and not clicked
    got = await excluded({"event_id": "4", "user_id": u, "item_id": b, "event_type": "purchase", "ts": t + 200_000})
    assert c not in got and b in got  # b bought: a repeat cooling down, no longer a negative
    # a boost lifts the model's last candidate to the top (two new users with the same one event)
    def first(user: str) -> dict[str, Any]:
        return {"event_id": f"{user}-1", "user_id": user, "item_id": c, "event_type": "view", "ts": t}

    (plain,) = await run.batch([first(u + "-plain")])
    last = plain["items"][-1]["item_id"]
    boosted = Run(s.model_copy(update={"boosts": f"item:{last}=1000"}), registry)
    boosted.offset = run.offset
    (rec,) = await boosted.batch([first(u + "-boosted")])
    assert rec["items"][0]["item_id"] == last and rec["items"][0]["score"] > 1000
    assert [it["item_id"] for it in rec["items"][1:]] == [it["item_id"] for it in plain["items"][:-1]]
    await run.buffers.r.aclose()
    await boosted.buffers.r.aclose()


async def test_trending_is_the_fallback_and_online_counters_match_a_recount(stack: Any, clean_catalog: Any,
                                                                          tmp_path: Path) -> None:
    s = Settings(redis_url=stack.redis_url, home=tmp_path, trending_window_s=60, policy_name=f"p{tmp_path.name[-8:]}")
    run = Run(s, None)  # no model: every recommendation is a fallback
    tag = tmp_path.name[-6:]
    t = 1_700_000_000_000 + random.Random(tag).randrange(10**9)  # this test's own trending buckets
    hot = [f"hot-{tag}-{i}" for i in range(12)]
    # popularity: hot-0 bought by 6 buyers, hot-1 by 5, ...; other users then view hot-7 once
    evs = [{"event_id": f"e{i}-{k}", "user_id": f"buyer-{tag}-{k}", "item_id": hot[i], "event_type": "purchase",
            "ts": t + i} for i in range(6) for k in range(6 - i)]
    await run.batch(evs)
    recs = await run.batch([{"event_id": f"n{k}", "user_id": f"tr-{tag}-{k}", "item_id": hot[7], "event_type": "view",
                             "ts": t + 100} for k in range(6)])
    for r in recs:  # trending now, minus what the user has seen
        assert r["fallback"] and [it["item_id"] for it in r["items"]] == hot[:6], r
    # the next events: hot-5 for everyone; recount HR@10 from the lists remembered
    lists = {u: dict(run.stages["online"].online._last[u]) for u in (r["user_id"] for r in recs)}
    await run.batch([{"event_id": f"x{k}", "user_id": f"tr-{tag}-{k}", "item_id": hot[5], "event_type": "click",
                      "ts": t + 200} for k in range(6)])
    m = run.proc.metrics
    for source in ("model", "trending"):
        version = "fallback" if source == "model" else "trending"
        hits = sum(hot[5] in lists[u][source][1][:10] for u in lists)
        ndcg = sum(1 / math.log2(lists[u][source][1].index(hot[5]) + 2) for u in lists if hot[5] in lists[u][source][1][:10])
        labels = (source, version, s.policy_name)
        assert m.online_events.labels(*labels)._value.get() == len(lists)
        assert m.online_hits.labels(*labels)._value.get() == hits
        assert math.isclose(m.online_ndcg.labels(*labels)._value.get(), ndcg, rel_tol=1e-9)
    h = await clean_catalog.hgetall("{online}:" + s.policy_name)
    assert int(h[b"trending|trending|n"]) == len(lists)
    await clean_catalog.delete("{online}:" + s.policy_name)
    await run.buffers.r.aclose()


async def test_trending_forgets_what_left_its_window(stack: Any, tmp_path: Path) -> None:
    from attnrec.stream.stages.trending import Trending

    from attnrec.events import ClickEvent

    r = redis_client(Settings(redis_url=stack.redis_url))
    tr = Trending(r, window_s=60)  # 30 buckets of 2 s
    tag = tmp_path.name[-6:]
    t = 1_600_000_000_000 + random.Random(tag).randrange(10**9)
    counts = tr.counter()
    counts.add([ClickEvent(f"o{i}", "u", f"old-{tag}", "purchase", t) for i in range(5)]
               + [ClickEvent(f"n{i}", "u", f"new-{tag}", "view", t + 50_000) for i in range(2)]
               + [ClickEvent("r", "u", f"prod-{tag}", "gift", t + 50_000, {"room_id": f"room-{tag}"})])
    await tr.write(counts)
    assert await tr.top(n=5, now_ms=t + 55_000) == [(f"old-{tag}", 15.0), (f"prod-{tag}", 3.0), (f"new-{tag}", 2.0)]
    assert await tr.top(f"room:room-{tag}", n=5, now_ms=t + 55_000) == [(f"prod-{tag}", 3.0)]
    # 65 s after the purchases they are out of the 60 s window; the views are still in
    assert await tr.top(n=5, now_ms=t + 65_000) == [(f"prod-{tag}", 3.0), (f"new-{tag}", 2.0)]
    assert await tr.top(n=5, now_ms=t + 200_000) == []
    assert 0 < await r.ttl(tr.key("all", (t + 50_000) // tr.bucket_ms)) <= 66  # the buckets expire by themselves
    await r.aclose()
