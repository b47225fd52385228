"""Online, prequential evaluation: does the user's next event hit the top-10 emitted for them?

For every recommendation the worker emits, it remembers the lists each *source* would have
shown that user — ``model`` (what was emitted, labelled by the model version, or ``fallback``),
``trending`` (trending now, minus what the policy excludes) and ``static`` (the manifest's
popularity list, likewise) — and scores them on the user's next positive event (impressions
and skips are not choices): HR@10 (the item is in the list) and NDCG@10 (1 / log2(rank + 2)).
Each user's lists are scored once, by the first event after them. Later sources join a
remembered recommendation by its trigger (:meth:`OnlineEval.add`): the shadow model's list
(``shadow``) with the serving list it is paired with (``shadow-base``), and with interleaving
the part of the published list each team contributed (``team-serving``, ``team-candidate``:
a hit is a win, :mod:`attnrec.stream.stages.interleave`), all labelled by the candidate's version. The memory is bounded
(least recently recommended users first out); a user whose partition moved to another worker
is simply not scored there.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from attnrec.errors import TransientError
from attnrec.events import NEGATIVE_TYPES, ClickEvent

from ..core.buffer import redis_errors
from ..core.metrics import WorkerMetrics
from ..core.model import LoadedModel
from ..core.stage import Batch, Stage
from .interleave import win_rate
from .trending import TrendingStage

__all__ = ["SOURCES", "ONLINE_KEY", "Score", "OnlineEval", "OnlineStage", "totals", "comparisons", "series"]

log = logging.getLogger(__name__)

#: Hash of the online-evaluation totals of a policy, all workers together (``{online}:<policy>``),
#: fields ``<source>|<version>|n`` (events scored), ``|hits`` and ``|ndcg`` (sums); a per-minute
#: copy ``{online}:<policy>:<epoch minute>`` (kept a day) is the dashboard's time series.
ONLINE_KEY = "{online}:"
_ONLINE_TTL_S = 86400

SOURCES = ("model", "trending", "static", "shadow", "shadow-base", "team-serving", "team-candidate")
_K = 10


@dataclass(frozen=True, slots=True)
class Score:
    source: str
    version: str
    hit: bool
    ndcg: float


class OnlineEval:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, dict[str, tuple[str, Sequence[str]]]] = OrderedDict()
        self._tags: dict[str, str] = {}

    def __len__(self) -> int:
        return len(self._last)

    def observe(self, user: str, item: str, event_type: str) -> list[Score]:
        """Score the lists remembered for ``user`` against its next event (and forget them);
        [] when none are remembered or the event is not a choice."""
        if event_type in NEGATIVE_TYPES:
            return []
        lists = self._last.pop(user, None)
        self._tags.pop(user, None)
        if lists is None:
            return []
        out = []
        for source, (version, items) in lists.items():
            try:
                rank = list(items[:_K]).index(item)
            except ValueError:
                out.append(Score(source, version, False, 0.0))
                continue
            out.append(Score(source, version, True, 1.0 / math.log2(rank + 2)))
        return out

    def remember(self, user: str, lists: dict[str, tuple[str, Sequence[str]]], tag: str = "") -> None:
        """The lists (source -> (version label, items)) shown to ``user`` now; ``tag`` names the
        recommendation (its trigger event id) for :meth:`add`."""
        self._last[user] = lists
        self._tags[user] = tag
        self._last.move_to_end(user)
        while len(self._last) > self.capacity:
            gone, _ = self._last.popitem(last=False)
            self._tags.pop(gone, None)

    def add(self, user: str, tag: str, lists: dict[str, tuple[str, Sequence[str]]]) -> bool:
        """Add lists computed later for the same recommendation (a shadow model's); False, and
        nothing added, when ``user``'s remembered recommendation is no longer ``tag`` (its next
        event came first, or a newer recommendation replaced it)."""
        cur = self._last.get(user)
        if cur is None or self._tags.get(user) != tag:
            return False
        cur.update(lists)
        return True


def totals(fields: dict[bytes, bytes]) -> list[dict[str, object]]:
    """Rows {source, version, events, hits, hr@10, ndcg@10} from an online-evaluation hash
    (``<source>|<version>|n``, ``|hits``, ``|ndcg``), most events first."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for k, v in fields.items():
        source, version, what = k.decode().rsplit("|", 2) if k.count(b"|") >= 2 else ("", "", "")
        if source:
            acc.setdefault((source, version), {"n": 0.0, "hits": 0.0, "ndcg": 0.0})[what] = float(v)
    rows = [{"source": s, "version": v, "events": int(a["n"]), "hits": int(a["hits"]),
             "hr@10": a["hits"] / a["n"] if a["n"] else None,
             "ndcg@10": a["ndcg"] / a["n"] if a["n"] else None} for (s, v), a in acc.items()]
    for r in rows:  # shadow rows: lists compared with the serving model's, and their summed overlap@10
        a = acc[(str(r["source"]), str(r["version"]))]
        if a.get("lists"):
            r["lists"], r["overlap@10"] = int(a["lists"]), a.get("overlap", 0.0) / a["lists"]
    return sorted(rows, key=lambda r: (-int(r["events"]), str(r["source"])))  # type: ignore[call-overload]


def comparisons(rows: Sequence[dict[str, object]]) -> list[dict[str, object]]:
    """Per candidate version (from :func:`totals` rows): the shadow comparison — its online
    NDCG@10 / HR@10 against the serving model's on the same triggers, overlap@10 — and, when
    interleaved, the team-draft win rate with its 95 % interval; most events first."""
    by: dict[tuple[str, str], dict[str, object]] = {(str(r["source"]), str(r["version"])): r for r in rows}
    out = []
    for v in sorted({ver for src, ver in by if src in ("shadow", "team-candidate")}):
        sh, base = by.get(("shadow", v), {}), by.get(("shadow-base", v), {})
        c = {"version": v, "events": sh.get("events", 0), "shadow_ndcg@10": sh.get("ndcg@10"),
             "serving_ndcg@10": base.get("ndcg@10"), "shadow_hr@10": sh.get("hr@10"), "serving_hr@10": base.get("hr@10"),
             "lists": sh.get("lists", 0), "overlap@10": sh.get("overlap@10")}
        ts, tc = by.get(("team-serving", v)), by.get(("team-candidate", v))
        if ts is not None or tc is not None:
            c["interleave"] = {"impressions": int((ts or tc or {}).get("events", 0) or 0),  # type: ignore[call-overload]
                               **win_rate(int(ts["hits"]) if ts else 0, int(tc["hits"]) if tc else 0).to_dict()}
        out.append(c)
    return sorted(out, key=lambda c: -int(c["events"]))  # type: ignore[call-overload]


#: The sources the dashboard charts per minute (every version of a source together).
CHARTED = ("model", "shadow", "trending", "static")


def series(t: Sequence[int], minutes: Sequence[dict[bytes, bytes]]) -> dict[str, list[float | None]]:
    """HR@10 per minute for each charted source (all its versions together; None: no events
    that minute), from the per-minute hashes: ``{"t": [...], "model": [...], ...}``."""
    out: dict[str, list[float | None]] = {"t": [float(x) for x in t]}
    for src in CHARTED:
        out[src] = []
    for fields in minutes:
        acc = {src: [0.0, 0.0] for src in CHARTED}
        for r in totals(fields):
            a = acc.get(str(r["source"]))
            if a is not None:
                a[0] += int(r["events"])  # type: ignore[call-overload]
                a[1] += int(r["hits"])  # type: ignore[call-overload]
        for src in CHARTED:
            n, h = acc[src]
            out[src].append(h / n if n else None)
    return out


class OnlineStage(Stage):
    """``ONLINE_EVAL``: the online evaluation on the batch path. Once a batch's records are on
    their way, the batch's events score the lists remembered for their users, then the batch's
    own lists are remembered: the published one (``model``), trending now (with the trending
    stage) and the static list, each minus what the user may not be shown, plus any list a
    stage attached to the recommendation (``Recommendation.lists``). Counters in ``/metrics``;
    the totals of all workers in Redis, written once a second (:meth:`run`)."""

    name = "online"
    every_s = 1.0  # how often the totals are written

    def __init__(self, client: aioredis.Redis, metrics: WorkerMetrics, policy_name: str = "default",
                 trending: TrendingStage | None = None, capacity: int = 200_000) -> None:  # fmt: skip
        self.r = client
        self.metrics = metrics
        self.policy_name = policy_name
        self.trending = trending
        self.online = OnlineEval(capacity)
        self.sums: dict[str, float] = {}  # totals since the last flush (field -> sum)
        self._counters: dict[tuple[str, str], tuple[Any, Any, Any, str]] = {}
        self._joiners: list[Callable[[], None]] = []
        self._static: tuple[str | None, list[tuple[str, bytes]]] = (None, [])

    def join(self, joiner: Callable[[], None]) -> None:
        """``joiner()`` runs before each batch's events are scored: where lists computed later
        for a remembered recommendation join it (:meth:`OnlineEval.add`; the shadow's)."""
        self._joiners.append(joiner)

    def add(self, field: str, value: float) -> None:
        self.sums[field] = self.sums.get(field, 0) + value

    def observe(self, batch: Batch) -> None:
        for joiner in self._joiners:
            joiner()
        self._score(batch.events)
        self._remember(batch)

    def _score(self, events: Sequence[ClickEvent]) -> None:
        """Score the remembered lists of each user against its first event of the batch."""
        seen: set[str] = set()
        sums, counters = self.sums, self._counters
        for ev in events:
            if ev.user_id in seen:
                continue
            seen.add(ev.user_id)
            for sc in self.online.observe(ev.user_id, ev.item_id, ev.event_type):
                key = (sc.source, sc.version)
                c = counters.get(key)
                if c is None:  # the labelled children, looked up once (labels() is slow)
                    labels = (sc.source, sc.version, self.policy_name)
                    m = self.metrics
                    c = counters[key] = (m.online_events.labels(*labels), m.online_hits.labels(*labels),
                                         m.online_ndcg.labels(*labels), f"{sc.source}|{sc.version}|")
                c[0].inc()
                sums[c[3] + "n"] = sums.get(c[3] + "n", 0) + 1
                if sc.hit:
                    c[1].inc()
                    c[2].inc(sc.ndcg)
                    sums[c[3] + "hits"] = sums.get(c[3] + "hits", 0) + 1
                    sums[c[3] + "ndcg"] = sums.get(c[3] + "ndcg", 0.0) + sc.ndcg

    def _static_list(self, model: LoadedModel | None) -> list[tuple[str, bytes]]:
        version = model.version if model is not None else None
        if self._static[0] != version:
            pop = model.popularity if model is not None and model.popularity else []
            self._static = (version, [(i, i.encode()) for i in pop])
        return self._static[1]

    def _remember(self, batch: Batch) -> None:
        trending = self.trending.candidates if self.trending is not None else None
        static = self._static_list(batch.model)
        for rec in batch.recs:
            u, p = rec.user_id, rec.payload
            lists: dict[str, tuple[str, Sequence[str]]] = {
                "model": ("fallback" if rec.fallback else str(p["model_version"]), rec.items)}
            if trending is not None:
                lists["trending"] = ("trending", batch.pick(trending, _K, u))
            lists["static"] = ("static", batch.pick(static, _K, u))
            lists.update(rec.lists)
            self.online.remember(u, lists, p["trigger_event_id"])

    async def flush(self) -> None:
        """Write the totals gathered since the last flush to Redis (one round trip)."""
        sums, self.sums = self.sums, {}
        if not sums:
            return
        key = ONLINE_KEY + self.policy_name
        minute = f"{key}:{int(time.time() // 60)}"
        with redis_errors():
            async with self.r.pipeline(transaction=False) as pipe:
                for h in (key, minute):
                    for f, v in sums.items():
                        if f.endswith(("|ndcg", "|overlap")):
                            pipe.hincrbyfloat(h, f, v)
                        else:
                            pipe.hincrby(h, f, int(v))
                pipe.expire(minute, _ONLINE_TTL_S)
                await pipe.execute()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every_s)
            try:
                await self.flush()
            except TransientError as exc:  # estimates: that second's totals are dropped
                log.warning("online-evaluation totals not written: %s", exc)
