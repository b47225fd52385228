"""The live-commerce simulator (training/sim): deterministic, ordered, consistent with its own
catalog (no click on a room that is not live or a product that is off the shelf or sold out),
bursty on request, and with its planted rules firing at the stated rates."""

from __future__ import annotations

import collections
from typing import Any

import pytest
from attnrec.training.sim.availability import AvailabilityLog
from attnrec.training.sim.live import P_COMPANION, P_GIFT_BUY, P_VIDEO_ROOM, START_TS_MS, generate_live
from attnrec.training.sim.world import LiveWorld

from attnrec.events import SHORT_VIEW_MS, CatalogEvent, ClickEvent, parse_catalog_event, parse_event

Event = ClickEvent | CatalogEvent


@pytest.fixture(scope="module")
def stream() -> list[tuple[Event, str | None]]:
    """Rate 100 for 120 s with a 20 s burst at 10x from 60 s: 6000 + 20000 + 4000 clicks."""
    return list(generate_live(30_000, seed=7, rate=100, burst_at_s=60, burst_s=20, burst_factor=10, with_causes=True))


def clicks(stream: list[tuple[Event, str | None]]) -> list[ClickEvent]:
    return [e for e, _ in stream if isinstance(e, ClickEvent)]


def catalog(stream: list[tuple[Event, str | None]]) -> list[CatalogEvent]:
    return [e for e, _ in stream if isinstance(e, CatalogEvent)]


def test_deterministic_for_a_seed() -> None:
    a = list(generate_live(3000, seed=7, rate=200))
    b = list(generate_live(3000, seed=7, rate=200))
    assert a == b
    c = list(generate_live(3000, seed=8, rate=200))
    assert [e.to_json() for e in a] != [e.to_json() for e in c]
    ids = [e.event_id for e in a]
    assert len(set(ids)) == len(ids)
    assert sum(isinstance(e, ClickEvent) for e in a) == 3000


def test_ts_non_decreasing_from_start(stream: list[tuple[Event, str | None]]) -> None:
    ts = [e.ts for e, _ in stream]
    assert ts[0] == START_TS_MS
    assert all(x <= y for x, y in zip(ts, ts[1:], strict=False))


def test_status_changes_every_second_and_a_share_of_rooms_live(stream: list[tuple[Event, str | None]]) -> None:
    cats = [c for c in catalog(stream) if c.ts > START_TS_MS]  # after the snapshot at the start
    span_s = (stream[-1][0].ts - START_TS_MS) / 1000
    assert span_s > 100
    assert len(cats) / span_s >= 1.0
    per10 = collections.Counter((c.ts - START_TS_MS) // 10_000 for c in cats)
    assert all(per10[k] >= 5 for k in range(int(span_s) // 10)), per10  # no quiet stretch
    # the share of live rooms, every 10 s
    av = AvailabilityLog(catalog(stream))
    rooms = LiveWorld(7, n_rooms=40).rooms
    for k in range(int(span_s) // 10):
        live = sum(av.available(r, START_TS_MS + 10_000 * k) for r in rooms)
        assert 0.25 <= live / len(rooms) <= 0.75, (k, live)


def test_no_click_on_an_unavailable_room_or_product(stream: list[tuple[Event, str | None]]) -> None:
    av = AvailabilityLog()
    checked = 0
    for ev, _ in stream:
        if isinstance(ev, CatalogEvent):
            av.apply(ev)
            continue
        if ev.item_id.startswith(("live-", "prod-")):
            assert av.available(ev.item_id), f"{ev} on an unavailable item"
            checked += 1
        room = ev.context.get("room_id")
        if room is not None:
            assert av.available(room), f"{ev} in a room that is not live"
    assert checked > 10_000


def test_stock_never_negative_and_sold_out_never_bought(stream: list[tuple[Event, str | None]]) -> None:
    stock: dict[str, int] = {}
    sold_out_pending: set[str] = set()
    sold_outs = purchases = 0
    for ev, cause in stream:
        if isinstance(ev, CatalogEvent):
            if ev.status == "stock":
                assert ev.count is not None and ev.count >= 0
                if ev.count == 0:
                    assert ev.item_id in sold_out_pending, f"sold out without a purchase: {ev}"
                    assert cause is not None
                    sold_outs += 1
                sold_out_pending.discard(ev.item_id)
                stock[ev.item_id] = ev.count
        elif ev.event_type == "purchase":
            assert ev.item_id not in sold_out_pending
            assert stock.get(ev.item_id, 0) > 0, f"bought {ev.item_id} with no stock"
            stock[ev.item_id] -= 1
            purchases += 1
            if stock[ev.item_id] == 0:
                sold_out_pending.add(ev.item_id)
    assert purchases > 1000 and sold_outs > 10
    assert not sold_out_pending  # every sell-out was announced


def test_the_burst_is_burst_factor_times_the_base_rate(stream: list[tuple[Event, str | None]]) -> None:
    secs = collections.Counter((e.ts - START_TS_MS) // 1000 for e in clicks(stream))
    base = sum(secs[s] for s in range(0, 60)) / 60
    burst = sum(secs[s] for s in range(60, 80)) / 20
    after = sum(secs[s] for s in range(81, 110)) / 29
    assert 90 <= base <= 110 and 90 <= after <= 110
    assert 9.0 <= burst / base <= 11.0
    # a gift storm and flash sale: more gifts and purchases per event inside the window
    inside = [e for e in clicks(stream) if 60_000 <= e.ts - START_TS_MS < 80_000]
    outside = [e for e in clicks(stream) if not 60_000 <= e.ts - START_TS_MS < 80_000]
    def share(evs: list[ClickEvent], t: str) -> float:
        return sum(e.event_type == t for e in evs) / len(evs)
    assert share(inside, "gift") > 1.5 * share(outside, "gift")
    assert share(inside, "purchase") > 1.5 * share(outside, "purchase")


def _next_by_user(evs: list[ClickEvent]) -> dict[str, ClickEvent]:
    last: dict[str, ClickEvent] = {}
    nxt: dict[str, ClickEvent] = {}
    for e in evs:
        if e.user_id in last:
            nxt[last[e.user_id].event_id] = e
        last[e.user_id] = e
    return nxt


def test_planted_rules_fire_at_their_rates(stream: list[tuple[Event, str | None]]) -> None:
    evs = clicks(stream)
    cause_of = {e.event_id: c for e, c in stream if isinstance(e, ClickEvent)}
    by_id = {e.event_id: e for e in evs}
    nxt = _next_by_user(evs)

    def rate(trigger: Any) -> float:
        trig = [e for e in evs if trigger(e) and e.event_id in nxt]
        assert len(trig) > 300
        return sum(cause_of[nxt[e.event_id].event_id] == e.event_id for e in trig) / len(trig)

    # (a) gift in room r -> a purchase or cart of one of r's products: ~P_GIFT_BUY (less when sold out)
    a = rate(lambda e: e.event_type == "gift")
    assert P_GIFT_BUY - 0.12 <= a <= P_GIFT_BUY + 0.05, a
    # (b) a long view of streamer r's video -> room r, if live: ~P_VIDEO_ROOM x P(live)
    b = rate(lambda e: e.item_id.startswith("vid-") and e.event_type in ("view", "click")
             and e.context["dwell_ms"] >= SHORT_VIEW_MS)  # fmt: skip
    assert 0.15 <= b <= P_VIDEO_ROOM + 0.05, b
    # (c) purchase of p -> its companion
    c = rate(lambda e: e.event_type == "purchase")
    assert 0.2 <= c <= P_COMPANION + 0.05, c
    # every cause is the same user's previous event, and the effect fits the rule
    world = LiveWorld(7, n_rooms=40)
    n = 0
    for eid, cause in cause_of.items():
        if cause is None:
            continue
        e, t = by_id[eid], by_id[cause]
        assert e.user_id == t.user_id and nxt[cause] is e and t.ts <= e.ts
        if t.event_type == "gift":
            assert e.event_type in ("purchase", "cart") and e.context["room_id"] == t.item_id
        elif t.event_type == "purchase":
            assert e.item_id == world.companion[t.item_id]
        else:
            assert e.item_id == f"live-{world.video_room[int(t.item_id.removeprefix('vid-'))]}"
        n += 1
    assert n > 1000


def test_domains_types_and_schema(stream: list[tuple[Event, str | None]]) -> None:
    evs = clicks(stream)
    assert {e.context["domain"] for e in evs} == {"video", "live", "shop"}
    assert {"view", "click", "like", "cart", "purchase", "gift", "share", "impression"} <= {e.event_type for e in evs}
    for e in evs:
        ctx = e.context
        assert ctx["session_id"].startswith(e.user_id + "-s")
        assert ("room_id" in ctx) == (ctx["domain"] != "video")
        assert ("dwell_ms" in ctx) == (e.event_type in ("view", "click"))
        p = parse_event(e.to_json())
        assert (p.event_id, p.user_id, p.item_id, p.ts, p.context) == (e.event_id, e.user_id, e.item_id, e.ts, e.context)
        assert p.event_type == ("skip" if ctx.get("dwell_ms", SHORT_VIEW_MS) < SHORT_VIEW_MS else e.event_type)
    types = collections.Counter(parse_event(e.to_json()).event_type for e in evs)
    assert types["skip"] > 0.03 * len(evs)
    for c in catalog(stream):
        assert parse_catalog_event(c.to_json()) == c
        assert c.category is not None
        assert (c.room_id is None) == c.item_id.startswith("live-")
    # users come back to their favourite rooms: repeat consumption
    rooms_per_user = collections.defaultdict(collections.Counter)
    for e in evs:
        if e.item_id.startswith("live-"):
            rooms_per_user[e.user_id][e.item_id] += 1
    top_share = [c.most_common(1)[0][1] / sum(c.values()) for c in rooms_per_user.values() if sum(c.values()) >= 20]
    assert sum(top_share) / len(top_share) > 0.3


@pytest.mark.parametrize("flag", [["--synthetic"], ["--data", "events.jsonl"]])
def test_scenario_live_does_not_combine_with_other_sources(flag: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from attnrec.apps.cli import main

    assert main(["replay", "--scenario", "live", *flag]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--scenario live" in err and "--synthetic" in err and "--data" in err, err


def test_availability_log_now_at_a_time_and_since() -> None:
    def ev(status: str, ts: int, count: int | None = None, item: str = "prod-1-0") -> CatalogEvent:
        return CatalogEvent(f"c{ts}{status}", item, status, ts, count)

    log = AvailabilityLog([ev("on_shelf", 100), ev("stock", 100, 5), ev("stock", 200, 0), ev("off_shelf", 300),
                           ev("on_shelf", 400), ev("stock", 400, 3), ev("live", 50, item="live-1")])  # fmt: skip
    assert log.available("prod-1-0") and log.available("vid-9") and log.available("vid-9", 10)
    assert [log.available("prod-1-0", t) for t in (99, 100, 199, 200, 350, 400)] == [True, True, True, False, False, True]
    assert log.unavailable_since("prod-1-0", 350) == 200 and log.unavailable_since("prod-1-0", 450) is None
    log.apply(ev("ended", 500, item="live-1"))
    log.apply(ev("live", 450, item="live-1"))  # late: history only, "now" keeps the newer status
    assert log.unavailable() == {"live-1"} and log.unavailable_since("live-1") == 500
    assert log.available("live-1", 470) and log.items() == {"prod-1-0", "live-1"}
