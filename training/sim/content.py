"""Synthetic click events whose behaviour is driven by item content, with held-out (cold) items
(torch-free; the item-content measurement, ``training/content_eval.py``, and the tests).

The world (fixed by ``seed``): ``n_categories`` categories, each with ``brands_per_category``
brands; items "it-<k>" belong to one (category, brand) group, with a price from the brand's
price tier and a title "<brand> <adjective> <category noun> <model>". A share ``cold_share`` of
each group's items are *cold*: no event ever names them, except as a user's last event.

Users "u<k>" follow two categories and a favourite brand in each. They act in sessions; a
session is about one of the two categories (the first more often); inside it, the next item is
of the favourite brand (``P_BRAND``), of any brand of the category (``P_CATEGORY``), or a
globally popular item (noise). A user's last event (the leave-one-out test target) is, with
probability ``p_cold_target``, a cold item of the last session's category and favourite brand
(or of the category when that group has none): only content can tell a model which.
``cold_target="val"`` puts that cold item one event earlier, on the validation target, so that a
setting can be chosen on validation cases with cold targets (the test target is then warm).

    events, table, cold = generate_content(1000, 400, 40_000, seed=7)
    write_attributes_csv(path, table)
"""

from __future__ import annotations

import csv
import itertools
import random
from dataclasses import dataclass
from pathlib import Path

from attnrec.events import ClickEvent

from ..content import ContentTable, ItemAttributes
from .synth import START_TS_MS

__all__ = ["ContentWorld", "generate_content", "write_attributes_csv", "P_BRAND", "P_CATEGORY", "COLD_TARGETS"]

#: Where a user's cold target goes: the split's name -> its place counted from the end of the history.
COLD_TARGETS = {"test": 1, "val": 2}
P_BRAND = 0.55  # next item of the user's favourite brand in the session's category
P_CATEGORY = 0.30  # next item of any brand in the session's category (else: popular noise)
_NOUNS = ("phone", "lipstick", "sneaker", "kettle", "novel", "headset", "jacket", "lamp", "blender", "watch",
          "backpack", "serum", "camera", "mug", "scarf", "tent", "drill", "guitar", "pillow", "charger")
_ADJ = ("red", "blue", "classic", "pro", "mini", "max", "smart", "eco", "soft", "deluxe", "lite", "ultra")
_SYL = ("ka", "lo", "mi", "ra", "ten", "zu", "vi", "po", "sa", "ne", "dor", "fi", "gu", "tro")


@dataclass
class ContentWorld:
    """Items with category, brand, price and title; which are cold; the groups."""

    rows: list[ItemAttributes]
    prices: list[float]
    group_of: list[tuple[int, int]]  # item -> (category, brand within category)
    warm: dict[tuple[int, int], list[int]]  # group -> warm items (most popular first)
    cold: dict[tuple[int, int], list[int]]  # group -> cold items
    popular: list[int]  # warm items, most popular first

    @classmethod
    def build(cls, n_items: int, seed: int, n_categories: int = 8, brands_per_category: int = 4,
              cold_share: float = 0.15) -> ContentWorld:
        assert n_categories <= len(_NOUNS), f"at most {len(_NOUNS)} categories"
        rng = random.Random(f"content-world-{seed}")
        brand_names = [[f"{''.join(rng.choice(_SYL) for _ in range(rng.randint(2, 3)))}{c}{b}"
                        for b in range(brands_per_category)] for c in range(n_categories)]
        tier = [[rng.choice((5.0, 20.0, 80.0, 300.0)) for _ in range(brands_per_category)] for _ in range(n_categories)]
        rows, prices, group_of = [], [], []
        warm: dict[tuple[int, int], list[int]] = {}
        cold: dict[tuple[int, int], list[int]] = {}
        for k in range(n_items):
            g = (k % n_categories, (k // n_categories) % brands_per_category)
            c, b = g
            price = round(tier[c][b] * rng.lognormvariate(0.0, 0.3), 2)
            title = f"{brand_names[c][b]} {rng.choice(_ADJ)} {_NOUNS[c]} {rng.choice(_SYL)}{rng.randint(1, 99)}"
            rows.append(ItemAttributes(f"it-{k}", f"cat-{_NOUNS[c]}", brand_names[c][b], 0, title))
            prices.append(price)
            group_of.append(g)
            (cold if rng.random() < cold_share else warm).setdefault(g, []).append(k)
        for g, items in list(cold.items()):  # every group keeps a warm item
            if g not in warm:
                warm[g] = [items.pop()]
        popular = [k for g in sorted(warm) for k in warm[g]]
        rng.shuffle(popular)
        return cls(rows, prices, group_of, warm, {g: v for g, v in cold.items() if v}, popular)

    @property
    def cold_items(self) -> set[str]:
        return {self.rows[k].item_id for ks in self.cold.values() for k in ks}

    def table(self) -> ContentTable:
        return ContentTable({r.item_id: r for r in self.rows})


def _zipf(rng: random.Random, items: list[int]) -> int:
    """An item of ``items``, the first ones far more often (Zipf-like, exponent 0.8)."""
    cum = list(itertools.accumulate(1.0 / (r + 1) ** 0.8 for r in range(len(items))))
    x = rng.random() * cum[-1]
    return items[next(i for i, c in enumerate(cum) if c >= x)]


def _user_events(world: ContentWorld, uid: str, n: int, seed: int, p_cold_target: float,
                 n_categories: int, brands_per_category: int, cold_from_end: int = 1) -> list[ClickEvent]:
    rng = random.Random(f"content-{seed}-{uid}")
    cats = rng.sample(range(n_categories), 2)
    fav = {c: rng.randrange(brands_per_category) for c in cats}
    ts = START_TS_MS + rng.randrange(3_600_000)
    out: list[ClickEvent] = []
    left, cat, session = 0, cats[0], 0
    for k in range(n):
        if left <= 0:
            left, session = 1 + int(rng.expovariate(1 / 6)), session + 1
            cat = cats[0] if rng.random() < 0.7 else cats[1]
            ts += 3_600_000 + int(rng.expovariate(1 / 7_200_000))
        else:
            ts += 2_000 + int(rng.expovariate(1 / 30_000))
        left -= 1
        x = rng.random()
        group = (cat, fav[cat])
        if k == n - cold_from_end and n >= 3 and rng.random() < p_cold_target:
            pool = world.cold.get(group) or [i for b in range(brands_per_category) for i in world.cold.get((cat, b), [])]
            item = rng.choice(pool) if pool else _zipf(rng, world.warm[group])
        elif x < P_BRAND:
            item = _zipf(rng, world.warm[group])
        elif x < P_BRAND + P_CATEGORY:
            item = _zipf(rng, world.warm[(cat, rng.randrange(brands_per_category))])
        else:
            item = _zipf(rng, world.popular)
        etype = "click" if rng.random() < 0.4 else "view"
        out.append(ClickEvent(f"c{seed:x}-{uid}-{k}", uid, world.rows[item].item_id, etype, ts,
                              {"session_id": f"{uid}-s{session}"}))
    return out


def generate_content(n_users: int, n_items: int, n_events: int, seed: int = 0, *, n_categories: int = 8,
                     brands_per_category: int = 4, cold_share: float = 0.15,
                     p_cold_target: float = 0.3, cold_target: str = "test"
                     ) -> tuple[list[ClickEvent], ContentWorld, set[str]]:
    """(events sorted by time, the world with its attribute rows, the cold item ids); the cold
    items are targets of the ``cold_target`` split ("test": each user's last event, "val": the one
    before it)."""
    if cold_target not in COLD_TARGETS:
        raise ValueError(f"cold_target must be one of {sorted(COLD_TARGETS)}, not {cold_target!r}")
    world = ContentWorld.build(n_items, seed, n_categories, brands_per_category, cold_share)
    rng = random.Random(f"content-users-{seed}")
    weights = [rng.lognormvariate(0.0, 0.6) for _ in range(n_users)]
    total = sum(weights)
    events: list[ClickEvent] = []
    for u, w in enumerate(weights):
        n = max(4, int(n_events * w / total))
        events += _user_events(world, f"u{u}", n, seed, p_cold_target, n_categories, brands_per_category,
                               COLD_TARGETS[cold_target])
    events.sort(key=lambda e: (e.ts, e.user_id))
    return events, world, world.cold_items


def write_attributes_csv(path: str | Path, world: ContentWorld) -> Path:
    """The world's attribute file: item_id, category, brand, price, title (CSV)."""
    p = Path(path)
    with open(p, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["item_id", "category", "brand", "price", "title"])
        for r, price in zip(world.rows, world.prices, strict=True):
            w.writerow([r.item_id, r.category, r.brand, f"{price:.2f}", r.title])
    return p
