"""Synthetic click events with planted, learnable structure (torch-free; used by the demo, the
benchmark load generator and the attention analysis).

The world (fixed by ``seed``): ``n_items`` items "sku-<k>" in categories; every item has a
*follow-up* item (think phone -> case). Users "u<k>" prefer two categories. Each user's
activity comes in sessions (seconds apart inside a session, hours between sessions); some
sessions happen in a live room ("live-<r>") that features one category.

The planted rule: when a user's last ``WINDOW`` events contain a high-intent event (like, cart,
purchase, gift), then with probability ``P_RULE`` the next item is the follow-up of the item of
the most recent such event. That earlier event is the *planted cause* of the new one; it is
often not the newest event (views keep arriving in between), so a model that attends to the
right past event predicts much better than one that looks at the last click or at popularity.
Otherwise the next item comes from the live room's category, the user's preferred categories or
the global popularity curve (noise).

    for ev in generate(1000, 500, 50_000, seed=7): ...
    for ev, causes in generate_planted(...): ...   # causes: tuple of earlier event_ids
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections.abc import Iterator

from attnrec.events import ClickEvent

__all__ = ["generate", "generate_planted", "WINDOW", "P_RULE", "HIGH_INTENT"]

WINDOW = 8  # how far back the planted rule looks (events)
P_RULE = 0.6  # chance the rule fires when a high-intent event is in the window
HIGH_INTENT = frozenset({"like", "cart", "purchase", "gift"})
START_TS_MS = 1_764_288_000_000  # 2025-11-28T00:00:00Z

_TYPES = ("view", "click", "like", "cart", "purchase", "share")
_TYPE_W = (0.50, 0.22, 0.08, 0.10, 0.07, 0.03)
_ROOM_TYPES = ("view", "click", "like", "cart", "purchase", "gift", "share")
_ROOM_TYPE_W = (0.40, 0.20, 0.10, 0.10, 0.08, 0.09, 0.03)


class _World:
    def __init__(self, n_items: int, seed: int) -> None:
        rng = random.Random(f"world-{seed}")
        self.n_items = n_items
        self.n_cat = max(2, min(50, n_items // 20))
        self.item_ids = [f"sku-{k}" for k in range(n_items)]
        self.cat_items: list[list[int]] = [[] for _ in range(self.n_cat)]
        for k in range(n_items):
            self.cat_items[rng.randrange(self.n_cat)].append(k)
        self.cat_items = [c for c in self.cat_items if c] or [list(range(n_items))]
        self.n_cat = len(self.cat_items)
        self.follow = [rng.randrange(n_items) for _ in range(n_items)]  # planted follow-up item
        # Zipf-like popularity: cumulative weights for global and per-category draws
        self.global_cum = list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(n_items)))
        self.global_order = list(range(n_items))
        rng.shuffle(self.global_order)
        self.cat_cum = [list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(len(c)))) for c in self.cat_items]

    def popular(self, rng: random.Random) -> int:
        r = rng.random() * self.global_cum[-1]
        return self.global_order[bisect.bisect_left(self.global_cum, r)]

    def in_category(self, rng: random.Random, cat: int) -> int:
        cum = self.cat_cum[cat]
        return self.cat_items[cat][bisect.bisect_left(cum, rng.random() * cum[-1])]


def _user_stream(world: _World, uid: str, n: int, seed: int, start_ts_ms: int,
                 span_ms: int) -> Iterator[tuple[int, int, ClickEvent, tuple[str, ...]]]:
    rng = random.Random(f"{seed}-{uid}")
    prefs = (rng.randrange(world.n_cat), rng.randrange(world.n_cat))
    ts = start_ts_ms + rng.randrange(max(1, span_ms // 4))
    recent: list[tuple[str, int, str]] = []  # (event_id, item, type), newest last
    session_left = 0
    session_no = 0
    room: str | None = None
    room_cat = 0
    for k in range(n):
        if session_left <= 0:
            session_no += 1
            session_left = 1 + int(rng.expovariate(1 / 7))
            ts += int(rng.expovariate(1 / 3_600_000)) + 60_000  # hours between sessions
            if rng.random() < 0.3:
                r = rng.randrange(max(1, world.n_cat * 2))
                room, room_cat = f"live-{r}", r % world.n_cat
            else:
                room = None
        else:
            ts += int(rng.expovariate(1 / 20_000)) + 500  # seconds inside a session
        session_left -= 1
        if room is not None:
            etype = rng.choices(_ROOM_TYPES, _ROOM_TYPE_W)[0]
        else:
            etype = rng.choices(_TYPES, _TYPE_W)[0]
        causes: tuple[str, ...] = ()
        trigger = None
        for eid, item, t in reversed(recent[-WINDOW:]):
            if t in HIGH_INTENT:
                trigger = (eid, item)
                break
        if trigger is not None and rng.random() < P_RULE:
            item = world.follow[trigger[1]]
            causes = (trigger[0],)
        elif room is not None and rng.random() < 0.7:
            item = world.in_category(rng, room_cat)
        elif rng.random() < 0.6:
            item = world.in_category(rng, prefs[rng.random() < 0.3])
        else:
            item = world.popular(rng)
        eid = f"{seed:x}-{uid}-{k}"
        ctx: dict[str, object] = {"session_id": f"{uid}-s{session_no}"}
        if room is not None:
            ctx["room_id"] = room
        ev = ClickEvent(eid, uid, world.item_ids[item], etype, ts, ctx)
        recent.append((eid, item, etype))
        if len(recent) > 4 * WINDOW:
            del recent[: -WINDOW]
        yield ts, k, ev, causes


def generate_planted(
    n_users: int,
    n_items: int,
    n_events: int,
    seed: int = 0,
    start_ts_ms: int = START_TS_MS,
) -> Iterator[tuple[ClickEvent, tuple[str, ...]]]:
    """Events in global time order, each with the event_ids of its planted causes (may be empty).

    Users get a skewed share of the ``n_events`` (some heavy, most light); event_ids are unique
    for a given seed. Lazy: a merge of per-user streams, so memory stays small.
    """
    assert n_users >= 1 and n_items >= 2 and n_events >= 0, "need users, at least 2 items, events >= 0"
    world = _World(n_items, seed)
    rng = random.Random(f"users-{seed}")
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(n_users)]
    total = sum(weights)
    counts = [int(n_events * w / total) for w in weights]
    for i in rng.sample(range(n_users), k=min(n_users, n_events - sum(counts))):
        counts[i] += 1
    span_ms = max(3_600_000, n_events // max(n_users, 1) * 3_600_000 // 7)
    streams = [_user_stream(world, f"u{u}", c, seed, start_ts_ms, span_ms) for u, c in enumerate(counts) if c]
    for _ts, _k, ev, causes in heapq.merge(*streams, key=lambda x: (x[0], x[2].user_id, x[1])):
        yield ev, causes


def generate(n_users: int, n_items: int, n_events: int, seed: int = 0,
             start_ts_ms: int = START_TS_MS) -> Iterator[ClickEvent]:
    """``n_events`` synthetic click events in global time order (see :func:`generate_planted`)."""
    for ev, _ in generate_planted(n_users, n_items, n_events, seed, start_ts_ms):
        yield ev
