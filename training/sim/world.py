"""The live-commerce world: streamers with live rooms in categories, the rooms' products (each
with a companion), short videos, and users with favourite streamers, preferred categories and
an activity level, all fixed by a seed (torch-free). :mod:`attnrec.training.sim.live` runs it
as an event stream.
"""

from __future__ import annotations

import bisect
import itertools
import random
from collections.abc import Iterable

__all__ = ["LiveWorld", "CATEGORIES", "cumulative"]

CATEGORIES = ("beauty", "fashion", "food", "gaming", "tech", "home", "sports", "music", "pets", "books")


def cumulative(weights: Iterable[float]) -> list[float]:
    """Normalised cumulative weights, for ``bisect`` sampling."""
    c = list(itertools.accumulate(weights))
    return [x / c[-1] for x in c]


class LiveWorld:
    """Streamers, rooms, products, videos and users, fixed by ``seed`` (:mod:`attnrec.training.sim.live` describes them).

    ``stock_scale`` multiplies the initial stock counts (5-25 per product), so that a higher
    event rate does not sell everything out at once.
    """

    def __init__(self, seed: int = 7, *, n_users: int = 500, n_rooms: int = 40, n_videos: int | None = None,
                 stock_scale: int = 1) -> None:  # fmt: skip
        n_videos = n_videos if n_videos is not None else 3 * n_rooms
        assert n_users >= 2 and n_rooms >= 2 and n_videos >= 1, "need at least 2 users, 2 rooms and a video"
        rng = random.Random(f"live-world-{seed}")
        self.seed = seed
        self.rooms = [f"live-{r}" for r in range(n_rooms)]
        self.room_cat = [rng.randrange(len(CATEGORIES)) for _ in range(n_rooms)]
        self.cat_rooms = [[r for r, c in enumerate(self.room_cat) if c == cat] for cat in range(len(CATEGORIES))]
        self.room_products: list[list[str]] = []
        self.product_room: dict[str, int] = {}
        self.companion: dict[str, str] = {}
        self.stock0: dict[str, int] = {}
        for r in range(n_rooms):
            prods = [f"prod-{r}-{k}" for k in range(rng.randint(3, 6))]
            self.room_products.append(prods)
            for k, p in enumerate(prods):
                self.product_room[p] = r
                self.companion[p] = prods[(k + rng.randrange(1, len(prods))) % len(prods)]
                self.stock0[p] = rng.randint(5, 25) * max(1, stock_scale)
        self.videos = [f"vid-{k}" for k in range(n_videos)]
        self.video_room = [rng.randrange(n_rooms) for _ in range(n_videos)]
        self.room_videos: list[list[int]] = [[] for _ in range(n_rooms)]
        self.cat_videos: list[list[int]] = [[] for _ in CATEGORIES]
        for v, r in enumerate(self.video_room):
            self.room_videos[r].append(v)
            self.cat_videos[self.room_cat[r]].append(v)
        # Zipf-like popularity of rooms and videos (what "trending" sees)
        self.room_order = rng.sample(range(n_rooms), n_rooms)
        self.room_cum = cumulative(1.0 / (k + 1) ** 0.9 for k in range(n_rooms))
        self.video_order = rng.sample(range(n_videos), n_videos)
        self.video_cum = cumulative(1.0 / (k + 1) ** 0.9 for k in range(n_videos))
        # users: favourite streamers (popular ones more often), preferred categories, activity
        self.users = [f"u{k}" for k in range(n_users)]
        self.favs = [tuple(dict.fromkeys(self.popular_room(rng) for _ in range(rng.randint(1, 3)))) for _ in range(n_users)]
        self.prefs = [(self.room_cat[favs[0]], rng.randrange(len(CATEGORIES))) for favs in self.favs]
        self.activity_cum = cumulative(rng.lognormvariate(0.0, 0.8) for _ in range(n_users))

    def popular_room(self, rng: random.Random) -> int:
        return self.room_order[bisect.bisect_left(self.room_cum, rng.random())]

    def popular_video(self, rng: random.Random) -> int:
        return self.video_order[bisect.bisect_left(self.video_cum, rng.random())]
