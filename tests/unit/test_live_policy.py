"""The live-commerce decisions without services: catalog events, the skip rule, the policy's
exclusions and boosts, trending buckets and the prequential scores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from attnrec.stream.core.entries import format_entry
from attnrec.stream.stages.catalog import Availability
from attnrec.stream.stages.online import OnlineEval
from attnrec.stream.stages.policy import Policy, pad_rows
from attnrec.stream.stages.trending import bucket_counts

from attnrec.errors import ConfigError, InvalidEventError
from attnrec.events import CatalogEvent, ClickEvent, parse_catalog_event, parse_event
from attnrec.manifest import OOV
from attnrec.settings import load_settings


def test_catalog_events_parse_and_say_what_is_available() -> None:
    ev = parse_catalog_event(b'{"event_id":"c1","item_id":"live-3","status":"live","ts":5,"category":"music"}')
    assert ev == CatalogEvent("c1", "live-3", "live", 5, None, "music") and ev.available
    assert not parse_catalog_event(b'{"event_id":"c2","item_id":"p","status":"stock","count":0,"ts":5}').available
    assert parse_catalog_event(b'{"event_id":"c2","item_id":"p","status":"stock","count":3,"ts":5}').available
    for status in ("ended", "off_shelf"):
        assert not CatalogEvent("c", "x", status, 1).available
    assert parse_catalog_event(CatalogEvent("c9", "p", "stock", 7, 2, "toys", "live-1").to_json()).room_id == "live-1"
    for bad, why in ((b'{"event_id":"c","item_id":"x","status":"gone","ts":1}', "status"),
                     (b'{"event_id":"c","item_id":"x","status":"stock","ts":1}', "count"),
                     (b'{"event_id":"c","item_id":"x","status":"live","count":2,"ts":1}', "count"),
                     (b'{"item_id":"x","status":"live","ts":1}', "event_id"),
                     (b'not json', "not JSON"), (None, "empty")):
        with pytest.raises(InvalidEventError, match=why):
            parse_catalog_event(bad)


def test_a_short_view_is_a_skip_and_a_long_one_a_view() -> None:
    def ev(et: str, dwell: object) -> str:
        raw = ClickEvent("e", "u", "i", et, 1, {"dwell_ms": dwell}).to_json()
        return parse_event(raw).event_type

    assert ev("view", 1500) == "skip" and ev("click", 0) == "skip"
    assert ev("view", 2000) == "view" and ev("view", "fast") == "view" and ev("purchase", 10) == "purchase"
    assert parse_event(ClickEvent("e", "u", "i", "impression", 1).to_json()).event_type == "impression"


def _window(*entries: tuple[int, str, str]) -> list[bytes]:
    return [format_entry(ts, et, item).encode() for ts, et, item in entries]  # newest first


def test_cooldowns_exclude_recent_repeats_and_negatives_unless_a_positive_came_later() -> None:
    p = Policy(exclude_seen=False, repeat_cooldown_ms=60_000, negative_cooldown_ms=600_000)
    w = _window((1_000_000, "click", "a"),          # the newest: age 0
                (990_000, "impression", "b"),        # shown, not clicked, 10 s ago
                (980_000, "skip", "c"),              # skipped 20 s ago ...
                (970_000, "view", "c"),              # ... after a view 30 s ago (repeat cool-down too)
                (900_000, "purchase", "d"),          # 100 s ago: repeat allowed again
                (500_000, "skip", "e"),              # 500 s ago: still negative
                (300_000, "impression", "f"))        # 700 s ago: forgotten
    assert sorted(p.cooldown_items(w)) == ["a", "b", "c", "c", "e"]
    # a positive event after the impression lifts it
    assert "b" not in Policy(exclude_seen=False, negative_cooldown_ms=600_000).cooldown_items(
        _window((1_000, "click", "b"), (900, "impression", "b")))
    assert Policy(exclude_seen=False, negative_cooldown_ms=600_000).cooldown_items(
        _window((1_000, "click", "x"), (900, "impression", "b"))) == ["b"]
    assert not Policy(exclude_seen=True, negative_cooldown_ms=600_000).scans_rows  # the window is excluded anyway
    assert p.scans_rows


def test_blocked_items_unavailable_denied_and_by_category() -> None:
    view = Availability(3, frozenset({"gone"}), {"a": "toys", "b": "food", "c": "books"})
    assert Policy(deny_items=frozenset({"x"})).blocked(view) == {"gone", "x"}
    assert Policy(deny_categories=frozenset({"food"})).blocked(view) == {"gone", "b"}
    assert Policy(allow_categories=frozenset({"toys"})).blocked(view) == {"gone", "b", "c"}  # unknown category: allowed


def test_boosts_reorder_the_candidates() -> None:
    p = Policy.from_settings(load_settings(boosts="category:toys=2.5,item:z=0.5"))
    items = [{"item_id": "x", "score": 3.0}, {"item_id": "y", "score": 2.0}, {"item_id": "z", "score": 1.0}]
    out = p.boost(items, {"y": "toys"})
    assert [it["item_id"] for it in out] == ["y", "x", "z"] and out[0]["score"] == 4.5 and out[2]["score"] == 1.5
    for bad in ("toys=2", "category:toys", "brand:x=1", "item:=1", "item:x=big"):
        with pytest.raises(ConfigError, match="ATTNREC_BOOSTS"):
            load_settings(boosts=bad)


def test_pad_rows_pads_with_oov() -> None:
    out = pad_rows([[5, 6], [], [7]], 3)
    assert out.tolist() == [[5, 6], [OOV, OOV], [7, OOV]] and out.dtype == np.int64


def test_trending_buckets_weigh_types_and_scopes() -> None:
    evs = [ClickEvent("1", "u", "a", "view", 1_000, {"room_id": "live-1"}),
           ClickEvent("2", "u", "a", "purchase", 1_500, {"room_id": "live-1"}),
           ClickEvent("3", "u", "b", "impression", 1_600),
           ClickEvent("4", "u", "b", "gift", 2_100)]
    got = bucket_counts(evs, 1_000)
    assert got[("all", 1)] == {"a": 4.0} and got[("room:live-1", 1)] == {"a": 4.0}
    assert got[("all", 2)] == {"b": 3.0} and ("room:live-1", 2) not in got


def test_online_eval_scores_the_next_choice_once() -> None:
    o = OnlineEval(capacity=2)
    o.remember("u", {"model": ("v1", ["a", "b", "c"]), "trending": ("trending", ["c"])})
    assert o.observe("u", "b", "impression") == []  # not a choice: the lists wait
    scores = {s.source: s for s in o.observe("u", "b", "click")}
    assert scores["model"].hit and math.isclose(scores["model"].ndcg, 1 / math.log2(3)) and scores["model"].version == "v1"
    assert not scores["trending"].hit and scores["trending"].ndcg == 0.0
    assert o.observe("u", "b", "click") == []  # scored once
    for u in ("x", "y", "z"):
        o.remember(u, {"model": ("v", ["a"])})
    assert len(o) == 2 and o.observe("x", "a", "view") == []  # the oldest went out


def test_an_item_gone_off_while_its_batch_was_scored_leaves_the_lists() -> None:
    """The policy stage's rewrite: the catalog view moved between ``begin`` and the send; the
    items it made unavailable leave every list (one item fewer), the later picks obey it, and
    with no change the lists are left alone."""
    import asyncio
    from types import SimpleNamespace

    from attnrec.stream.core.recommend import Recommendation
    from attnrec.stream.core.stage import Batch
    from attnrec.stream.stages.policy import PolicyStage

    catalog = SimpleNamespace(view=Availability(1, frozenset({"x"})))
    stage = PolicyStage(Policy(), catalog)  # type: ignore[arg-type]
    batch = Batch([], exclude_seen=False)
    asyncio.run(stage.begin(batch))
    assert batch.blocked == {"x"}
    lists = {"u1": ["a", "b", "c"], "u2": ["d", "e"]}
    batch.recs = [Recommendation(u, {"user_id": u, "items": [{"item_id": i, "score": 1.0} for i in items]}, 0)
                  for u, items in lists.items()]
    asyncio.run(stage.rewrite(batch))  # nothing changed since begin
    assert [[it["item_id"] for it in r.payload["items"]] for r in batch.recs] == [["a", "b", "c"], ["d", "e"]]
    catalog.view = Availability(2, frozenset({"x", "b", "e"}))  # b and e went off meanwhile
    asyncio.run(stage.rewrite(batch))
    assert [[it["item_id"] for it in r.payload["items"]] for r in batch.recs] == [["a", "c"], ["d"]]
    assert batch.blocked == {"x", "b", "e"}
    assert batch.pick([("b", b"b"), ("e", b"e"), ("f", b"f")], 2, "u1") == ["f"]
