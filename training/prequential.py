"""Prequential evaluation on an event log: every method scored on the next event, event by
event, with retraining as production does it.

The log's events in time order (stable). Methods are fitted on the events before ``start``;
after that, time runs in periods of ``every``: at each period's start the retrained methods
are fitted again on every event so far (the attention model through
:func:`attnrec.training.retrain.retrain_events`, warm-started, and promoted only through
:func:`~attnrec.training.retrain.gate_decision`, exactly as the periodic trainer does). A
*pair* is a user's event and its next positive event (impressions and skips are not choices;
they leave the pair open) with the first at or after ``start``: the list scored is the one the
method would have shown right after the first event, the way the worker remembers the list it
emitted and scores it on the user's next event (stream/stages/online.py). Every method is
scored on exactly the same pairs.

What each list is (``methods``):

- ``popular``: the most frequent items of the events before the period (refitted each period);
- ``trending``: the worker's trending now (stream/stages/trending.py) replayed: the type
  weights, 30 buckets of ``window / 30``, the top 200 re-read as the stream's time enters a new
  bucket, and each list the first 10 of those the user may be shown;
- ``vsknn``, ``vmis``: session kNN (training/sknn.py), its index refitted each period; the
  session is the user's events so far;
- ``gru4rec``: training/baselines.py's GRU4Rec, retrained each period as the model is;
- ``attention-frozen``: the attention model trained on the events before ``start``, served as
  it is (no gate);
- ``attention``: the attention model retrained each period, warm-started, promoted through the
  gate: the model a deployment would have served.

Like the worker, a model falls back to trending now (then its static popularity list) for a user
whose window holds no item it knows; a kNN whose neighbours name fewer than the list's items,
and any list short of items, is filled from the period's most popular ones.

Each list is scored under two policies (``POLICIES``): ``excluded``, the items of the user's
last ``exclude_window`` events are never shown (the worker's default, ``EXCLUDE_SEEN``), and
``allowed``, repeats may be shown (``EXCLUDE_SEEN=false``). The rank of the next item in the
method's top ``n`` (20) gives HR@10, NDCG@10 and MRR@20 (training/prequential_report.py).
"""

from __future__ import annotations

import heapq
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnrec.events import NEGATIVE_TYPES, ClickEvent

from .sknn import VMIS, VSKNN, KnnConfig, SessionKNN

__all__ = ["POLICIES", "METHODS", "TYPE_WEIGHT", "Stream", "Pairs", "pairs_of", "Trending", "Method", "prequential",
           "Result"]

log = logging.getLogger(__name__)

POLICIES = ("excluded", "allowed")
METHODS = ("popular", "trending", "vsknn", "vmis", "gru4rec", "attention-frozen", "attention")
#: The worker's trending weights by event type (stream/stages/trending.py, TYPE_WEIGHT).
TYPE_WEIGHT = {"view": 1.0, "click": 1.0, "other": 1.0, "like": 1.5, "share": 1.5, "cart": 2.0, "purchase": 3.0, "gift": 3.0}
_BUCKETS = 30
_TOP = 200  # the trending list the worker re-reads


@dataclass
class Stream:
    """A log's events in time order, as index arrays."""

    events: list[ClickEvent]
    user: np.ndarray  # (E,) user index
    item: np.ndarray  # (E,) global item index
    ts: np.ndarray  # (E,) epoch ms
    users: list[str]
    items: list[str]
    by_user: list[np.ndarray]  # per user: its event indices in time order
    pos: np.ndarray  # (E,) the event's position in its user's sequence

    @classmethod
    def of(cls, events: Sequence[ClickEvent]) -> Stream:
        evs = sorted(events, key=lambda e: e.ts)
        uidx: dict[str, int] = {}
        iidx: dict[str, int] = {}
        user = np.fromiter((uidx.setdefault(e.user_id, len(uidx)) for e in evs), dtype=np.int64, count=len(evs))
        item = np.fromiter((iidx.setdefault(e.item_id, len(iidx)) for e in evs), dtype=np.int64, count=len(evs))
        ts = np.fromiter((e.ts for e in evs), dtype=np.int64, count=len(evs))
        order = np.argsort(user, kind="stable")
        bounds = np.searchsorted(user[order], np.arange(len(uidx) + 1))
        by_user = [order[bounds[u]:bounds[u + 1]] for u in range(len(uidx))]
        pos = np.zeros(len(evs), dtype=np.int64)
        for seq in by_user:
            pos[seq] = np.arange(len(seq))
        return cls(evs, user, item, ts, list(uidx), list(iidx), by_user, pos)

    def before(self, t_ms: int) -> int:
        """The number of events earlier than ``t_ms``."""
        return int(np.searchsorted(self.ts, t_ms, side="left"))

    def history(self, e: int, n: int) -> np.ndarray:
        """Event indices of the user's last ``n`` events up to and including ``e``."""
        seq, p = self.by_user[int(self.user[e])], int(self.pos[e])
        return seq[max(0, p + 1 - n): p + 1]

    def sessions(self, upto: int) -> list[tuple[str, list[str], int]]:
        """Every user's events among the first ``upto`` as (key, items, last time), for kNN."""
        out = []
        for u, seq in enumerate(self.by_user):
            s = seq[seq < upto]
            if len(s):
                out.append((self.users[u], [self.items[i] for i in self.item[s]], int(self.ts[s[-1]])))
        return out


@dataclass
class Pairs:
    """The (event, next positive event) pairs scored, as arrays aligned by pair."""

    prev: np.ndarray  # event index of the list's moment
    next: np.ndarray  # event index of the choice
    target: np.ndarray  # global item index of the choice
    user: np.ndarray  # user index

    def __len__(self) -> int:
        return len(self.prev)


def pairs_of(stream: Stream, start_ms: int, end_ms: int | None = None) -> Pairs:
    """Each user's (latest event, next positive event) with the first at or after ``start_ms``
    and the second before ``end_ms``; in the order of the first event."""
    negative = np.fromiter((e.event_type in NEGATIVE_TYPES for e in stream.events), dtype=bool, count=len(stream.events))
    prev, nxt = [], []
    for seq in stream.by_user:
        if len(seq) < 2:
            continue
        a, b = seq[:-1], seq[1:]
        keep = ~negative[b] & (stream.ts[a] >= start_ms)
        if end_ms is not None:
            keep &= stream.ts[b] < end_ms
        prev.append(a[keep])
        nxt.append(b[keep])
    p = np.concatenate(prev) if prev else np.zeros(0, np.int64)
    n = np.concatenate(nxt) if nxt else np.zeros(0, np.int64)
    order = np.argsort(p, kind="stable")
    p, n = p[order], n[order]
    return Pairs(p, n, stream.item[n], stream.user[n])


# ------------------------------------------------------------------------------------ methods
class Method:
    """A list source. ``fit`` sees the events before a period; ``lists`` returns, for the
    requests (event indices, in time order, all in the period), the top ``n`` global item
    indices under each policy (-1 pads a short row)."""

    name = ""
    refit = True  # fitted at every period (else only at the first)

    def fit(self, stream: Stream, upto: int, t_ms: int, ctx: Context) -> None:  # noqa: B027 - optional hook
        pass

    def lists(self, stream: Stream, reqs: np.ndarray, n: int, ctx: Context) -> dict[str, np.ndarray]:
        raise NotImplementedError


@dataclass
class Context:
    """What the methods share within one run."""

    exclude_window: int
    trending: Trending
    popular: list[int] = field(default_factory=list)  # the period's most popular global items
    seen_cache: dict[int, np.ndarray] = field(default_factory=dict)

    def seen(self, stream: Stream, e: int) -> np.ndarray:
        """Global items of the user's last ``exclude_window`` events up to ``e``."""
        got = self.seen_cache.get(e)
        if got is None:
            got = self.seen_cache[e] = np.unique(stream.item[stream.history(e, self.exclude_window)])
        return got


def _pick(ranked: Sequence[int], n: int, banned: np.ndarray | set[int] | None) -> list[int]:
    out: list[int] = []
    ban = set(banned.tolist()) if isinstance(banned, np.ndarray) else banned
    for i in ranked:
        if ban is None or i not in ban:
            out.append(i)
            if len(out) == n:
                break
    return out


def _fill(row: list[int], n: int, popular: Sequence[int], banned: np.ndarray | None) -> list[int]:
    """``row`` topped up from ``popular`` (items not banned, not already in it), padded with -1."""
    if len(row) < n:
        have = set(row)
        ban = set(banned.tolist()) if banned is not None else set()
        for i in popular:
            if i not in have and i not in ban:
                row.append(i)
                if len(row) == n:
                    break
    return row + [-1] * (n - len(row))


def _rows(stream: Stream, reqs: np.ndarray, n: int, ctx: Context, ranked: Callable[[int], Sequence[int]],
          fill: bool = True) -> dict[str, np.ndarray]:
    """The top ``n`` of ``ranked(e)`` each policy allows, topped up from the popular items
    (``fill``; trending now is not: the worker shows what trending has)."""
    out = {p: np.full((len(reqs), n), -1, dtype=np.int64) for p in POLICIES}
    for r, e in enumerate(reqs.tolist()):
        full = ranked(e)
        seen = ctx.seen(stream, e)
        for p, ban in (("excluded", seen), ("allowed", None)):
            row = _pick(full, n, ban)
            out[p][r] = _fill(row, n, ctx.popular, ban) if fill else row + [-1] * (n - len(row))
    return out


class Popular(Method):
    name = "popular"

    def fit(self, stream: Stream, upto: int, t_ms: int, ctx: Context) -> None:
        c = Counter(stream.item[:upto].tolist())
        ctx.popular = [i for i, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP + ctx.exclude_window]]

    def lists(self, stream: Stream, reqs: np.ndarray, n: int, ctx: Context) -> dict[str, np.ndarray]:
        return _rows(stream, reqs, n, ctx, lambda e: ctx.popular)


class Trending(Method):
    """The worker's trending now, replayed in event order (module text). :meth:`at` gives the top
    list as the worker had it right after event ``e``."""

    name = "trending"

    def __init__(self, stream: Stream, window_ms: int, weights: dict[str, float] | None = None) -> None:
        self.window_ms = window_ms
        self.bucket_ms = max(1, window_ms // _BUCKETS)
        w = weights or TYPE_WEIGHT
        self.weight = np.fromiter((w.get(e.event_type, 0.0) for e in stream.events), dtype=np.float64,
                                  count=len(stream.events))
        self.stream = stream
        self.counts: dict[int, Counter[int]] = defaultdict(Counter)  # bucket -> item -> score
        self.done = 0  # events counted
        self.refreshed = -1  # bucket of the last re-read
        self.top: list[int] = []
        self._snap: dict[int, list[int]] = {}

    def at(self, e: int) -> list[int]:
        """The top list the worker had when it remembered the list shown after event ``e``: every
        earlier event counted, re-read when one entered a new bucket (the worker counts ``e``
        itself after the batch's lists are remembered). Events are asked for in time order;
        :meth:`prepare` keeps each requested moment's list for later methods."""
        got = self._snap.get(e)
        if got is not None:
            return got
        if e < self.done:
            raise ValueError("trending is replayed forwards only: prepare() the requests first")
        st = self.stream
        while self.done < e:
            i = self.done
            b = int(st.ts[i]) // self.bucket_ms
            if self.weight[i]:
                self.counts[b][int(st.item[i])] += float(self.weight[i])
            self.done += 1
            if b > self.refreshed:
                self._refresh(b)
        self._snap[e] = self.top
        return self.top

    def prepare(self, reqs: np.ndarray) -> None:
        """Keep the list of each request's moment (``reqs`` in time order), forgetting older ones."""
        self._snap = {e: self._snap[e] for e in reqs.tolist() if e in self._snap}
        for e in reqs.tolist():
            self.at(e)

    def _refresh(self, b: int) -> None:
        for old in [k for k in self.counts if k <= b - _BUCKETS]:
            del self.counts[old]
        total: Counter[int] = Counter()
        for k in range(b - _BUCKETS + 1, b + 1):
            total.update(self.counts.get(k, {}))
        # Redis ZREVRANGE: score descending, equal scores by member descending (the item id)
        items = self.stream.items
        self.top = [i for _, _, i in heapq.nlargest(_TOP, ((s, items[i], i) for i, s in total.items()))]
        self.refreshed = b

    def lists(self, stream: Stream, reqs: np.ndarray, n: int, ctx: Context) -> dict[str, np.ndarray]:
        return _rows(stream, reqs, n, ctx, self.at, fill=False)


class KNN(Method):
    def __init__(self, cfg: KnnConfig) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.knn = SessionKNN(cfg)
        self.index: dict[str, int] = {}

    def fit(self, stream: Stream, upto: int, t_ms: int, ctx: Context) -> None:
        self.knn.fit(stream.sessions(upto))
        self.index = {it: i for i, it in enumerate(stream.items)}

    def lists(self, stream: Stream, reqs: np.ndarray, n: int, ctx: Context) -> dict[str, np.ndarray]:
        def ranked(e: int) -> list[int]:
            hist = stream.history(e, self.cfg.max_len)
            sc = self.knn.scores([stream.items[i] for i in stream.item[hist]], stream.users[int(stream.user[e])])
            best = sorted(sc.items(), key=lambda kv: (-kv[1], self.index[kv[0]]))[: n + ctx.exclude_window]
            return [self.index[i] for i, _ in best]

        return _rows(stream, reqs, n, ctx, ranked)


# ------------------------------------------------------------------------------------ the loop
@dataclass
class Result:
    """Ranks (0-based; ``n`` = not in the top ``n``) per method and policy, aligned with ``pairs``;
    what the retrained models did at each period (``periods``)."""

    stream: Stream
    pairs: Pairs
    ranks: dict[str, dict[str, np.ndarray]]
    sources: dict[str, np.ndarray]  # per neural method: 1 where the model scored, 0 where it fell back
    periods: list[dict[str, Any]]
    n: int


def _method(name: str, stream: Stream, ctx: Context, knn: dict[str, KnnConfig], neural: Callable[[str], Method]) -> Method:
    if name == "popular":
        return Popular()
    if name == "trending":
        return ctx.trending
    if name in knn:
        return KNN(knn[name])
    return neural(name)


def prequential(events: Sequence[ClickEvent], start_ms: int, every_ms: int, methods: Sequence[str], *,
                end_ms: int | None = None, n: int = 20, exclude_window: int = 50, trending_window_ms: int = 1_800_000,
                trending_weights: dict[str, float] | None = None, knn: dict[str, KnnConfig] | None = None,
                neural: Callable[[str], Method] | None = None, stream: Stream | None = None) -> Result:
    """Run the evaluation (module text). ``neural(name)`` builds the model methods
    (training/prequential_models.py); ``knn`` the kNN variants by name (default V-SKNN, VMIS)."""
    stream = stream or Stream.of(events)
    pairs = pairs_of(stream, start_ms, end_ms)
    ctx = Context(exclude_window, Trending(stream, trending_window_ms, trending_weights))
    knn = knn if knn is not None else {"vsknn": VSKNN, "vmis": VMIS}
    unknown = [m for m in methods if m not in ("popular", "trending", *knn) and neural is None]
    if unknown:
        raise ValueError(f"no way to build {unknown}")
    built = [_method(m, stream, ctx, knn, neural or (lambda x: Method())) for m in methods]
    popular = Popular()  # the period's most popular items fill short lists, whichever methods run
    ranks = {m.name: {p: np.full(len(pairs), n, dtype=np.int64) for p in POLICIES} for m in built}
    sources: dict[str, np.ndarray] = {}
    last = int(stream.ts[pairs.prev[-1]]) if len(pairs) else start_ms
    bounds = list(range(start_ms, last + 1, every_ms)) or [start_ms]
    periods: list[dict[str, Any]] = []
    for k, b in enumerate(bounds):
        hi = bounds[k + 1] if k + 1 < len(bounds) else math.inf
        sel = np.flatnonzero((stream.ts[pairs.prev] >= b) & (stream.ts[pairs.prev] < hi))
        upto = stream.before(b)
        popular.fit(stream, upto, b, ctx)
        info: dict[str, Any] = {"start_ms": b, "history_events": upto, "pairs": len(sel)}
        for m in built:
            if k == 0 or m.refit:
                m.fit(stream, upto, b, ctx)
                if hasattr(m, "report"):
                    info[m.name] = m.report()
        periods.append(info)
        if not len(sel):
            continue
        reqs = pairs.prev[sel]
        ctx.trending.prepare(reqs)
        ctx.seen_cache.clear()
        for m in built:
            got = m.lists(stream, reqs, n, ctx)
            for p in POLICIES:
                rows = got[p]
                hit = rows == pairs.target[sel, None]
                ranks[m.name][p][sel] = np.where(hit.any(1), hit.argmax(1), n)
            src = getattr(m, "last_sources", None)
            if src is not None:
                sources.setdefault(m.name, np.zeros(len(pairs), dtype=np.int8))[sel] = src
        log.info("prequential: period %d/%d (%d pairs) done", k + 1, len(bounds), len(sel))
    return Result(stream, pairs, ranks, sources, periods, n)
