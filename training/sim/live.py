"""A deterministic live-stream-commerce world's event stream (torch-free; used by ``attnrec
replay --scenario live``, the demo and the tests). The world is :mod:`.world`'s, the
availability a stream implies :mod:`.availability`'s.

The world (fixed by ``seed``, see :class:`~attnrec.training.sim.world.LiveWorld`):

- streamers, each with a live room ``live-<r>`` in one category (``CATEGORIES``). Rooms go live
  and end on a schedule of stream time: sessions of ``LIVE_S`` seconds, breaks of ``OFF_S``
  seconds, so about half of the rooms are live at any time and several rooms change status
  every second. Each room sells 3-6 products ``prod-<r>-<k>`` (the room's category); every
  product has a *companion* product in the same room (think lipstick -> lip liner);
- short videos ``vid-<k>``, each by one streamer (so of the streamer's category); always
  available;
- users ``u<k>`` with 1-3 favourite streamers they keep coming back to (repeat consumption),
  two preferred categories (the first favourite's and one more) and an activity level.

The catalog stream: when a room goes live it emits ``live`` (with its category) and its
products go ``on_shelf`` with a ``stock`` count; when it ends, ``ended`` and ``off_shelf``.
Purchases use up stock: the purchase that sells a product out is followed by ``stock`` with
count 0; ``P_RESTOCK`` of the sold-out products are restocked ``RESTOCK_S`` seconds later if the
room is still live (in a burst: all, after ``FLASH_RESTOCK_S``, with burst_factor/2 x the stock). At ``start_ms`` a snapshot gives every room's and product's status. Users only
act on what is available at the event's time: live rooms, on-shelf products with stock.

The click stream: ``rate`` events/s of stream time (gaps jittered), ``burst_factor`` x that
inside the burst window (a flash sale and gift storm: more gifts, carts and purchases). Users
act in sessions; a session is a visit to the feed (videos, rooms, products, impressions) and
into rooms (likes, gifts, shares, product views, carts, purchases). ``context`` holds
``domain`` (video | live | shop), ``session_id``, ``room_id`` (live and shop events) and
``dwell_ms`` (views and clicks: long on favourites and preferred categories, often under
``SHORT_VIEW_MS`` elsewhere, which the parser reads as ``skip``).

The planted rules, each about a user's *next* event after a trigger (the trigger is the
planted cause, reported with ``with_causes=True``):

(a) after a ``gift`` in room r the user buys (``purchase`` or ``cart``, evenly) one of r's
    available products with probability ``P_GIFT_BUY`` (0.6), the room's first product most
    often;
(b) after a long view (dwell >= ``SHORT_VIEW_MS``) of a video of streamer r the user goes to room
    r (a long view) with probability ``P_VIDEO_ROOM`` (0.5), if r is live;
(c) after a ``purchase`` of p the user buys (``cart`` or ``purchase``) p's companion with
    probability ``P_COMPANION`` (0.4), if it is available.

A rule that cannot fire (room ended, products sold out) leaves the event to the background
behaviour. Popularity alone ("trending now") cannot know which room or product comes next;
a sequence model that reads the last events can.

    for ev in generate_live(20_000, seed=7, rate=200): ...            # ClickEvent | CatalogEvent
    for ev, cause in generate_live(1000, with_causes=True): ...       # cause: an event_id or None
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, overload

from attnrec.events import SHORT_VIEW_MS, CatalogEvent, ClickEvent

from .world import CATEGORIES, LiveWorld, cumulative

__all__ = ["generate_live", "P_GIFT_BUY", "P_VIDEO_ROOM", "P_COMPANION", "P_RESTOCK", "LIVE_S", "OFF_S", "RESTOCK_S",
           "FLASH_RESTOCK_S", "START_TS_MS"]

P_GIFT_BUY = 0.6  # rule (a): gift in room r -> purchase/cart of one of r's products
P_VIDEO_ROOM = 0.5  # rule (b): long view of streamer r's video -> room r, if live
P_COMPANION = 0.4  # rule (c): purchase of p -> cart/purchase of p's companion
P_RESTOCK = 0.5  # a sold-out product is restocked later (if its room is still live)
LIVE_S = (20.0, 60.0)  # a room's live session, seconds of stream time (uniform)
OFF_S = (20.0, 70.0)  # a room's break between sessions
RESTOCK_S = (5.0, 20.0)  # sold out -> restocked
FLASH_RESTOCK_S = (1.0, 5.0)  # sold out in a burst -> restocked (always), with burst_factor / 2 x the stock
START_TS_MS = 1_764_288_000_000  # 2025-11-28T00:00:00Z, as training/sim/synth.py

_GIFT, _VIDEO, _BUY = 0, 1, 2  # rule kinds
_RULE_P = (P_GIFT_BUY, P_VIDEO_ROOM, P_COMPANION)
_SESSION_END = 1 / 15  # a user leaves the pool after an event with this probability
# in-room actions (normal, burst), and feed actions (normal, burst)
_ROOM_ACTS = ("like", "gift", "click", "pview", "cart", "purchase", "share", "leave")
_ROOM_W = ((0.18, 0.14, 0.10, 0.14, 0.10, 0.08, 0.04, 0.22), (0.08, 0.30, 0.04, 0.08, 0.15, 0.22, 0.03, 0.10))
_FEED_ACTS = ("video", "room", "impression", "shop")
_FEED_W = ((0.40, 0.35, 0.12, 0.13), (0.20, 0.60, 0.08, 0.12))


@dataclass(slots=True)
class _User:
    u: int
    sid: str
    room: int = -1  # the room the user is in (-1: the feed)
    rule: tuple[int, Any, str] | None = None  # (kind, room or product, cause event_id) of a planted rule


class _Sim:
    """The simulation state; :meth:`run` yields ``(event, cause)`` in ts order."""

    def __init__(self, w: LiveWorld, seed: int, rate: float, start_ms: int, burst: tuple[float, float, float] | None) -> None:
        self.w, self.rate, self.start, self.burst = w, rate, start_ms, burst
        self.rng, self.tag = random.Random(f"live-{seed}"), f"{seed:x}"
        self.flash = max(1, round(burst[2] / 2)) if burst is not None else 1  # restock multiplier in a burst
        self.live, self.live_list = [False] * len(w.rooms), list[int]()
        self.shelf = dict.fromkeys(w.product_room, False)
        self.stock = dict.fromkeys(w.product_room, 0)
        self.heap: list[tuple[float, int, int, Any]] = []  # (t_ms, seq, kind 0 live / 1 end / 2 restock, arg)
        self.seq = itertools.count()
        self.n_click = self.n_cat = 0
        self.sessions = [0] * len(w.users)
        self.out: list[tuple[ClickEvent | CatalogEvent, str | None]] = []

    # --- catalog ----------------------------------------------------------------------------
    def _cat(self, t: float, item: str, status: str, r: int, count: int | None = None, room: bool = False,
             cause: str | None = None) -> None:  # fmt: skip
        self.n_cat += 1
        ev = CatalogEvent(f"lc{self.tag}-{self.n_cat}", item, status, self.start + int(t), count,
                          CATEGORIES[self.w.room_cat[r]], None if room else self.w.rooms[r])  # fmt: skip
        self.out.append((ev, cause))

    def _push(self, t: float, kind: int, arg: Any) -> None:
        heapq.heappush(self.heap, (t, next(self.seq), kind, arg))

    def go_live(self, r: int, t: float, end_at: float) -> None:
        self.live[r] = True
        self.live_list.append(r)
        self._cat(t, self.w.rooms[r], "live", r, room=True)
        for p in self.w.room_products[r]:
            self.shelf[p] = True
            self.stock[p] = self.w.stock0[p]
            self._cat(t, p, "on_shelf", r)
            self._cat(t, p, "stock", r, self.stock[p])
        self._push(end_at, 1, r)

    def end(self, r: int, t: float, snapshot: bool = False) -> None:
        if not snapshot:
            self.live[r] = False
            self.live_list.remove(r)
            self._push(t + 1000 * self.rng.uniform(*OFF_S), 0, r)
        self._cat(t, self.w.rooms[r], "ended", r, room=True)
        for p in self.w.room_products[r]:
            self.shelf[p] = False
            self._cat(t, p, "off_shelf", r)

    def catalog_until(self, t: float) -> None:
        heap, rng = self.heap, self.rng
        while heap and heap[0][0] <= t:
            ht, _, kind, arg = heapq.heappop(heap)
            if kind == 0:
                self.go_live(arg, ht, ht + 1000 * rng.uniform(*LIVE_S))
            elif kind == 1:
                self.end(arg, ht)
            elif self.shelf[p := arg] and self.stock[p] == 0:
                self.stock[p] = self.w.stock0[p] * (self.flash if self.burst and self.burst[0] <= ht < self.burst[1] else 1)
                self._cat(ht, p, "stock", self.w.product_room[p], self.stock[p])

    def start_world(self) -> None:
        """The snapshot at t=0: about LIVE/(LIVE+OFF) of the rooms live, the others ended."""
        rng = self.rng
        live_mean, off_mean = sum(LIVE_S) / 2, sum(OFF_S) / 2
        for r in range(len(self.w.rooms)):
            if rng.random() < live_mean / (live_mean + off_mean):
                self.go_live(r, 0.0, 1000 * rng.uniform(2.0, LIVE_S[1]))
            else:
                self.end(r, 0.0, snapshot=True)
                self._push(1000 * rng.uniform(1.0, OFF_S[1]), 0, r)

    # --- users ------------------------------------------------------------------------------
    def products(self, r: int) -> list[str]:
        """Room r's products that can be bought now (none if r is not live)."""
        if not self.live[r]:
            return []
        shelf, stock = self.shelf, self.stock
        return [p for p in self.w.room_products[r] if shelf[p] and stock[p] > 0]

    def pick_product(self, prods: list[str]) -> str:
        return prods[0] if self.rng.random() < 0.4 else prods[self.rng.randrange(len(prods))]

    def live_room(self, u: int) -> tuple[int, int]:
        """A live room for user u and its affinity (2 favourite, 1 preferred category, 0
        other); (-1, 0) when no room is live."""
        rng, w, live = self.rng, self.w, self.live
        if not self.live_list:
            return -1, 0
        favs = [r for r in w.favs[u] if live[r]]
        if favs and rng.random() < 0.6:
            return favs[rng.randrange(len(favs))], 2
        if rng.random() < 0.5:
            cands = [r for r in w.cat_rooms[w.prefs[u][rng.random() < 0.35]] if live[r]]
            if cands:
                return cands[rng.randrange(len(cands))], 1
        for _ in range(6):
            r = w.popular_room(rng)
            if live[r]:
                break
        else:
            r = self.live_list[rng.randrange(len(self.live_list))]
        return r, 2 if r in w.favs[u] else 1 if w.room_cat[r] in w.prefs[u] else 0

    def dwell(self, p_long: float) -> int:  # long: ~11 s median; short: under SHORT_VIEW_MS (a skip)
        rng = self.rng
        return SHORT_VIEW_MS + int(rng.lognormvariate(9.3, 0.8)) if rng.random() < p_long else 200 + rng.randrange(SHORT_VIEW_MS - 200)

    def act(self, us: _User, t: float, in_burst: bool) -> None:
        """User ``us``'s next event at stream time ``t`` (plus a sold-out event it causes)."""
        rng, w = self.rng, self.w
        u, etype, item, cause = us.u, "", "", None
        room = dwell = -1  # the event's room (live and shop events), its dwell_ms (views, clicks)
        rule, us.rule = us.rule, None
        if rule is not None and rng.random() < _RULE_P[rule[0]]:
            kind, arg, cause = rule
            if kind == _GIFT:
                prods = self.products(arg)
                if prods:
                    etype, item, room = ("purchase" if rng.random() < 0.5 else "cart"), self.pick_product(prods), arg
            elif kind == _VIDEO:
                if self.live[arg]:
                    etype, item, room, dwell = "view", w.rooms[arg], arg, self.dwell(1.0)
                    us.room = arg
            else:
                q = w.companion[arg]
                r = w.product_room[q]
                if self.live[r] and self.shelf[q] and self.stock[q] > 0:
                    etype, item, room = ("cart" if rng.random() < 0.5 else "purchase"), q, r
            if not etype:
                cause = None
        if not etype and us.room >= 0 and self.live[us.room]:
            r = us.room
            a = _ROOM_ACTS[bisect.bisect_left(_ROOM_CUM[in_burst], rng.random())]
            if a in ("pview", "cart", "purchase"):
                prods = self.products(r)
                if prods:
                    etype, item, room = ("view" if a == "pview" else a), self.pick_product(prods), r
                    if a == "pview":
                        dwell = self.dwell(0.6)
                else:
                    a = "like"
            if a == "click":
                etype, item, room, dwell = "click", w.rooms[r], r, self.dwell(0.9)
            elif a in ("like", "gift", "share"):
                etype, item, room = a, w.rooms[r], r
            elif a == "leave":
                us.room = -1
        if not etype:
            us.room = -1
            a = _FEED_ACTS[bisect.bisect_left(_FEED_CUM[in_burst], rng.random())]
            if a in ("room", "shop", "impression") and not self.live_list:
                a = "video"
            if a == "room":
                r, aff = self.live_room(u)
                etype, item, room = ("view" if rng.random() < 0.7 else "click"), w.rooms[r], r
                dwell = self.dwell((0.35, 0.6, 0.9)[aff])
                if dwell >= SHORT_VIEW_MS:
                    us.room = r
            elif a == "shop":
                r, aff = self.live_room(u)
                prods = self.products(r)
                if prods:
                    etype, item, room, dwell = "view", self.pick_product(prods), r, self.dwell((0.3, 0.6, 0.8)[aff])
                else:
                    a = "video"
            elif a == "impression":
                if rng.random() < 0.5:
                    r, _ = self.live_room(u)
                    etype, item, room = "impression", w.rooms[r], r
                else:
                    etype, item = "impression", w.videos[w.popular_video(rng)]
            if a == "video":
                x, vids, p_long = rng.random(), [], 0.3  # a favourite's, a preferred category's or a popular video
                if x < 0.45:
                    fav = w.favs[u][rng.randrange(len(w.favs[u]))]
                    vids, p_long = w.room_videos[fav] or w.cat_videos[w.room_cat[fav]], 0.9
                elif x < 0.8:
                    vids, p_long = w.cat_videos[w.prefs[u][rng.random() < 0.35]], 0.65
                v = vids[rng.randrange(len(vids))] if vids else w.popular_video(rng)
                etype, item, dwell = ("view" if rng.random() < 0.8 else "click"), w.videos[v], self.dwell(p_long)
                if dwell >= SHORT_VIEW_MS:
                    us.rule = (_VIDEO, w.video_room[v], "")
        self.n_click += 1
        eid = f"lv{self.tag}-{self.n_click}"
        ctx: dict[str, object] = {"domain": "video" if room < 0 else "shop" if item[0] == "p" else "live", "session_id": us.sid}
        if room >= 0:
            ctx["room_id"] = w.rooms[room]
        if dwell >= 0:
            ctx["dwell_ms"] = dwell
        ts = self.start + int(t)
        self.out.append((ClickEvent(eid, w.users[u], item, etype, ts, ctx), cause))
        if us.rule is not None:  # set above by a long video view: now we know its event_id
            us.rule = (_VIDEO, us.rule[1], eid)
        elif etype == "gift":
            us.rule = (_GIFT, room, eid)
        elif etype == "purchase":
            us.rule = (_BUY, item, eid)
            self.stock[item] -= 1
            if self.stock[item] == 0:
                self._cat(t, item, "stock", room, 0, cause=eid)
                if in_burst:  # a flash sale: restocked soon, with more
                    self._push(t + 1000 * rng.uniform(*FLASH_RESTOCK_S), 2, item)
                elif rng.random() < P_RESTOCK:
                    self._push(t + 1000 * rng.uniform(*RESTOCK_S), 2, item)

    def new_user(self, busy: set[int]) -> _User:
        rng, cum = self.rng, self.w.activity_cum
        while (u := bisect.bisect_left(cum, rng.random())) in busy:
            pass
        busy.add(u)
        self.sessions[u] += 1
        return _User(u, f"{self.w.users[u]}-s{self.sessions[u]}")

    def run(self, n_events: int) -> Iterator[tuple[ClickEvent | CatalogEvent, str | None]]:
        rng = self.rng
        self.start_world()
        n_users = len(self.w.users)
        busy: set[int] = set()
        pool = [self.new_user(busy) for _ in range(max(1, min(n_users // 2, int(self.rate * 2))))]
        gap = 1000.0 / self.rate
        b0, b1, factor = self.burst if self.burst is not None else (math.inf, math.inf, 1.0)
        t = 0.0
        out = self.out
        for _ in range(n_events):
            in_burst = b0 <= t < b1
            t += (gap / factor if in_burst else gap) * (0.5 + rng.random())
            in_burst = b0 <= t < b1
            if self.heap and self.heap[0][0] <= t:
                self.catalog_until(t)
            i = rng.randrange(len(pool))
            self.act(pool[i], t, in_burst)
            if pool[i].rule is None and rng.random() < _SESSION_END:  # a planted rule's "next" comes first
                busy.discard(pool[i].u)
                pool[i] = self.new_user(busy)
            yield from out
            out.clear()


_ROOM_CUM = (cumulative(_ROOM_W[0]), cumulative(_ROOM_W[1]))
_FEED_CUM = (cumulative(_FEED_W[0]), cumulative(_FEED_W[1]))


@overload
def generate_live(n_events: int, *, seed: int = ..., rate: float = ..., start_ms: int = ..., burst_at_s: float | None = ...,
                  burst_s: float = ..., burst_factor: float = ..., n_users: int | None = ..., n_rooms: int | None = ...,
                  n_videos: int | None = ..., world: LiveWorld | None = ...,
                  with_causes: Literal[False] = ...) -> Iterator[ClickEvent | CatalogEvent]: ...  # fmt: skip
@overload
def generate_live(n_events: int, *, seed: int = ..., rate: float = ..., start_ms: int = ..., burst_at_s: float | None = ...,
                  burst_s: float = ..., burst_factor: float = ..., n_users: int | None = ..., n_rooms: int | None = ...,
                  n_videos: int | None = ..., world: LiveWorld | None = ...,
                  with_causes: Literal[True]) -> Iterator[tuple[ClickEvent | CatalogEvent, str | None]]: ...  # fmt: skip
def generate_live(
    n_events: int,
    *,
    seed: int = 7,
    rate: float = 100.0,
    start_ms: int = START_TS_MS,
    burst_at_s: float | None = None,
    burst_s: float = 60.0,
    burst_factor: float = 10.0,
    n_users: int | None = None,
    n_rooms: int | None = None,
    n_videos: int | None = None,
    world: LiveWorld | None = None,
    with_causes: bool = False,
) -> Iterator[ClickEvent | CatalogEvent] | Iterator[tuple[ClickEvent | CatalogEvent, str | None]]:
    """``n_events`` click events and the catalog events around them, in non-decreasing ``ts``.

    ``rate`` is click events per second of stream time (``burst_factor`` x inside
    ``[burst_at_s, burst_at_s + burst_s)``); the ts are the schedule a replayer keeps. At an equal
    ts, catalog events come first unless a click caused them (a sold-out ``stock``). Defaults
    scale with the rate and size: ``n_rooms`` max(40, rate * 0.4), ``n_users``
    max(100, n_events / 40), ``n_videos`` 3 x rooms, stock x max(1, rate / 100). With
    ``with_causes`` each event comes as ``(event, cause)``: the event_id of the planted rule's
    trigger (a click), of the purchase that sold a product out (a ``stock`` 0), else None.
    Deterministic for a seed (event_ids too); lazy.
    """
    assert n_events >= 0 and rate > 0 and burst_s > 0 and burst_factor >= 1, "bad generate_live arguments"
    if world is None:
        world = LiveWorld(seed, n_users=n_users or max(100, n_events // 40), n_rooms=n_rooms or max(40, round(rate * 0.4)),
                          n_videos=n_videos, stock_scale=max(1, round(rate / 100)))  # fmt: skip
    burst = None if burst_at_s is None else (1000.0 * burst_at_s, 1000.0 * (burst_at_s + burst_s), float(burst_factor))
    sim = _Sim(world, seed, float(rate), start_ms, burst)
    if with_causes:
        return sim.run(n_events)
    return (ev for ev, _ in sim.run(n_events))
