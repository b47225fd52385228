"""What a batch owes the live features, in one place the processor calls at four points:
before the model (the availability view, the policy's exclusions in the graph's input), after
it (boosts, the trending fallback, the lists the online evaluation remembers) and after the
batch (its trending counts, kept until the worker's once-a-second :meth:`LiveLayer.flush`
writes them and the online-evaluation totals to Redis, for every worker and the dashboard). The decisions are :mod:`attnrec.stream.policy`'s, :mod:`attnrec.stream.online`'s and
:mod:`attnrec.stream.trending`'s; this module only wires them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import redis.asyncio as aioredis
from attnrec.stream.buffer import redis_errors
from attnrec.stream.catalog import Availability, CatalogStore
from attnrec.stream.interleave import in_experiment, team_draft
from attnrec.stream.logic import Recommendation
from attnrec.stream.metrics import WorkerMetrics
from attnrec.stream.model import LoadedModel
from attnrec.stream.online import OnlineEval
from attnrec.stream.policy import Policy, pad_rows
from attnrec.stream.shadow import Shadow, candidate_lists, overlap
from attnrec.stream.trending import Trending

from attnrec.errors import InvalidEventError, TransientError
from attnrec.events import ClickEvent, parse_catalog_event
from attnrec.manifest import OOV
from attnrec.settings import Settings

__all__ = ["ONLINE_KEY", "LiveLayer"]

log = logging.getLogger(__name__)

#: Hash of the online-evaluation totals of a policy, all workers together (``{online}:<policy>``),
#: fields ``<source>|<version>|n`` (events scored), ``|hits`` and ``|ndcg`` (sums); a per-minute
#: copy ``{online}:<policy>:<epoch minute>`` (kept a day) is the dashboard's time series.
ONLINE_KEY = "{online}:"
_NONE: frozenset[bytes] = frozenset()
_NO_CATALOG = Availability()  # without CATALOG: everything available, one object (the memo's key)
_ONLINE_TTL_S = 86400


class LiveLayer:
    def __init__(self, s: Settings, client: aioredis.Redis, metrics: WorkerMetrics) -> None:
        self.s = s
        self.r = client
        self.metrics = metrics
        self.policy = Policy.from_settings(s)
        self.catalog = CatalogStore(client) if s.catalog else None
        self.trending = Trending(client, s.trending_window_s)
        self.online = OnlineEval() if s.online_eval else None
        self._blocked_key: tuple[Any, ...] = ()
        self._blocked: tuple[frozenset[str], np.ndarray] = (frozenset(), np.zeros(0, dtype=np.int64))
        self._sums: dict[str, float] = {}  # online totals since the last flush
        self._counters: dict[tuple[str, str], tuple[Any, Any, Any, str]] = {}
        self._counts = self.trending.counter()  # trending counts since the last flush
        self.shadow = Shadow(s.shadow_fraction, k=s.top_k, exclude_seen=s.exclude_seen, exclude_window=s.exclude_window,
                             cache_bytes=int(s.cache_mb * 2**20), cache_dtype=s.cache_dtype)
        self._to_shadow: tuple[dict[str, tuple[str, Sequence[bytes], list[str], int, int]], frozenset[str]] | None = None

    def set_shadow(self, m: LoadedModel | None) -> None:
        """The candidate version to shadow-score (and interleave with), or None."""
        old = self.shadow.model
        if old is not None:
            self.metrics.shadow_info.labels(old.version).set(0)
        self.shadow.set_model(m)
        if m is not None:
            self.metrics.shadow_info.labels(m.version).set(1)

    @property
    def view(self) -> Availability:
        return self.catalog.view if self.catalog is not None else _NO_CATALOG

    # ------------------------------------------------------------------ the catalog topic
    async def apply_catalog(self, values: Sequence[bytes | None]) -> None:
        """Apply a batch of catalog records to the shared state, retrying Redis trouble until
        it succeeds; an invalid record is logged, counted and skipped (it cannot change what
        is available)."""
        assert self.catalog is not None
        events = []
        for v in values:
            try:
                events.append(parse_catalog_event(v))
            except InvalidEventError as exc:
                self.metrics.catalog_events.labels("invalid").inc()
                log.warning("catalog record skipped: %s", exc)
        attempt = 0
        while events:
            try:
                flags = await self.catalog.apply(events)
                break
            except TransientError as exc:
                attempt += 1
                delay = min(self.s.retry_max_s, 0.05 * 2 ** min(attempt, 10))
                log.warning("catalog batch of %d failed (attempt %d): %s; retrying in %.2fs", len(events), attempt, exc, delay)
                await asyncio.sleep(delay)
        else:
            return
        now = time.time() * 1000
        for ev, applied in zip(events, flags, strict=True):
            self.metrics.catalog_events.labels("applied" if applied else "stale").inc()
            self.metrics.catalog_delay_ms.observe(max(0.0, now - ev.ts))
        self.metrics.catalog_unavailable.set(len(self.catalog.view.unavailable))

    # ------------------------------------------------------------------ before the model
    async def refresh(self) -> None:
        """The availability view as of now (one GET when nothing changed)."""
        if self.catalog is not None:
            if await self.catalog.refresh():
                self.metrics.catalog_unavailable.set(len(self.catalog.view.unavailable))

    def blocked(self, model: LoadedModel | None) -> tuple[frozenset[str], np.ndarray]:
        """The items no row may get, as ids and as ``model``'s indices (memoised per model
        version and availability version)."""
        view = self.view
        key = (model.version if model is not None else None, view.version)
        if key != self._blocked_key:
            ids = frozenset(self.policy.blocked(view))
            idx = model.item_index if model is not None else {}
            arr = np.fromiter(sorted({j for i in ids if (j := idx.get(i.encode())) is not None}), dtype=np.int64)
            self._blocked_key, self._blocked = key, (ids, arr)
        return self._blocked

    def exclude(self, model: LoadedModel, inputs: Any) -> None:
        """Add the policy's exclusions to ``inputs.exclude`` (a full or a step graph's rows)."""
        if inputs is None or not inputs.users:
            return
        _, glob = self.blocked(model)
        parts = [inputs.exclude]
        n = len(inputs.users)
        if glob.size:
            parts.append(np.broadcast_to(glob, (n, glob.size)))
        if self.policy.scans_rows:
            idx = model.item_index
            rows = [[idx.get(i.encode(), OOV) for i in self.policy.cooldown_items(w)] for w in inputs.windows]
            if any(rows):
                parts.append(pad_rows(rows, n))
        if len(parts) > 1:
            inputs.exclude = np.ascontiguousarray(np.concatenate(parts, axis=1))

    # ------------------------------------------------------------------ the batch's events
    def observe(self, events: Sequence[ClickEvent]) -> None:
        """Score the remembered lists of each user against its first new event of the batch."""
        if self.online is None:
            return
        self._take_shadow()
        seen: set[str] = set()
        sums, counters = self._sums, self._counters
        for ev in events:
            if ev.user_id in seen:
                continue
            seen.add(ev.user_id)
            for sc in self.online.observe(ev.user_id, ev.item_id, ev.event_type):
                key = (sc.source, sc.version)
                c = counters.get(key)
                if c is None:  # the labelled children, looked up once (labels() is slow)
                    labels = (sc.source, sc.version, self.policy.name)
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

    def _take_shadow(self) -> None:
        """Join the shadow's finished lists to the recommendations they shadow (before the users'
        next events are scored), with the serving list they are paired with."""
        assert self.online is not None
        m, sums = self.metrics, self._sums
        for res in self.shadow.drain():
            m.shadow_ms.observe(res.ms)
            for graph, n in res.rows.items():
                m.shadow_rows.labels(graph).inc(n)
            joined = 0
            ov = 0.0
            for user, (tag, cand, serving) in res.lists.items():
                if self.online.add(user, tag, {"shadow": (res.version, cand), "shadow-base": (res.version, serving)}):
                    joined += 1
                    o = overlap(cand, serving)
                    ov += o
                    m.shadow_overlap.observe(o)
            if joined:
                f = f"shadow|{res.version}|"
                sums[f + "lists"] = sums.get(f + "lists", 0) + joined
                sums[f + "overlap"] = sums.get(f + "overlap", 0.0) + ov

    async def _interleave(self, model: LoadedModel, recs: Sequence[Recommendation], windows: Mapping[str, Sequence[bytes]],
                          ids: frozenset[str]) -> dict[str, list[tuple[str, str]]]:
        """Team-draft merge of the serving and the candidate's lists for the recommendations of
        users in the experiment (the candidate scores them now, on the hot path: their lists are
        published); returns user -> [(item, team)]."""
        cand, k = self.shadow.model, self.s.top_k
        chosen = [r for r in recs if not r.payload["fallback"] and in_experiment(r.user_id, self.s.interleave_fraction)]
        if cand is None or not chosen:
            return {}
        wins = {r.user_id: windows[r.user_id] for r in chosen}
        lists = await asyncio.get_running_loop().run_in_executor(None, lambda: candidate_lists(
            cand, wins, list(wins), k=k, exclude_seen=self.s.exclude_seen, exclude_window=self.s.exclude_window,
            blocked=ids))
        merged: dict[str, list[tuple[str, str]]] = {}
        policy = self.policy
        for r in chosen:
            clist = lists.get(r.user_id)
            if clist and policy.scans_rows:  # the published list keeps the policy's cool-downs
                cool = set(policy.cooldown_items(wins[r.user_id]))
                clist = [(i, sc) for i, sc in clist if i not in cool]
            if not clist:
                continue
            p = r.payload
            score = {"serving": {it["item_id"]: it["score"] for it in p["items"]}, "candidate": dict(clist)}
            mix = merged[r.user_id] = team_draft([it["item_id"] for it in p["items"]], [i for i, _ in clist], k,
                                                 seed=p["trigger_event_id"])
            p["items"] = [{"item_id": i, "score": score[t][i], "team": t} for i, t in mix]
            p["interleave"] = {"serving": model.version, "candidate": cand.version}
        self.metrics.interleaved.inc(len(merged))
        return merged

    # ------------------------------------------------------------------ after the model
    async def finish(self, model: LoadedModel | None, recs: Sequence[Recommendation],
                     raw: Mapping[str, Sequence[bytes]], rows: Any = None,
                     fresh: Mapping[str, tuple[int, int]] | None = None) -> None:
        """Boost the model's lists, give fallbacks trending now, and remember every source's
        list for the online evaluation. ``rows`` (the scored rows) give a user's window where
        Redis returned only its new entries (an incremental model's cached users); ``fresh``
        each user's Redis ``#seq`` and new events in the batch (a shadow's caches)."""
        policy, k = self.policy, self.s.top_k
        self._to_shadow = None  # (a batch that failed after this point never hands its rows over)
        ids, _ = self.blocked(model)
        cand = self.shadow.model  # (none once it is the serving version: promoted while shadowed)
        shadowing = cand is not None and model is not None and cand.version != model.version
        if not recs or (self.online is None and not policy.boosts and not shadowing
                        and not any(r.payload["fallback"] for r in recs)):
            return
        # candidates with their ids as bytes, checked against the window's items as Redis returned them
        trending = [(i, i.encode()) for i, _ in self.trending.latest if i not in ids]
        pop = model.popularity if model is not None and model.popularity else []
        static = [(i, i.encode()) for i in pop if i not in ids]
        view = self.view
        windows = dict(zip(rows.users, rows.windows, strict=True)) if rows is not None else {}
        if shadowing:  # the candidate's windows: the longer of the row's and what Redis returned (EXCLUDE_WINDOW)
            for u, w in raw.items():
                if len(w) > len(windows.get(u, ())):
                    windows[u] = w
        if policy.boosts:
            for rec in recs:
                if not rec.payload["fallback"]:
                    rec.payload["items"] = policy.boost(rec.payload["items"], view.category)
        serving: dict[str, list[str]] = {}  # the serving model's own lists (before any interleaving)
        merged: dict[str, list[tuple[str, str]]] = {}
        if shadowing:
            assert model is not None
            serving = {r.user_id: [it["item_id"] for it in r.payload["items"]] for r in recs if not r.payload["fallback"]}
            if self.s.interleave_fraction > 0:
                merged = await self._interleave(model, recs, windows, ids)
        for rec in recs:
            p = rec.payload
            window = windows.get(rec.user_id) or raw.get(rec.user_id) or ()
            seen = {e.split(b"|", 2)[2] for e in window} if self.s.exclude_seen else _NONE
            cool = set(policy.cooldown_items(window)) if policy.scans_rows else ()

            if p["fallback"]:
                p["items"] = [{"item_id": i, "score": 0.0} for i in (_pick(trending, k, seen, cool) or _pick(static, k, seen, cool))]
            if self.online is not None:
                label = "fallback" if p["fallback"] else str(p["model_version"])
                lists = {
                    "model": (label, [it["item_id"] for it in p["items"]]),
                    "trending": ("trending", _pick(trending, 10, seen, cool)),
                    "static": ("static", _pick(static, 10, seen, cool)),
                }  # fmt: skip
                mix = merged.get(rec.user_id)
                if mix is not None:  # the published list is a merge: credit goes to the teams
                    cv = p["interleave"]["candidate"]
                    lists["model"] = (f"interleaved:{cv}", lists["model"][1])
                    lists["team-serving"] = (cv, [i for i, t in mix if t == "serving"])
                    lists["team-candidate"] = (cv, [i for i, t in mix if t == "candidate"])
                self.online.remember(rec.user_id, lists, p["trigger_event_id"])
        if shadowing and self.online is not None:
            fresh = fresh or {}
            self._to_shadow = ({u: (r.payload["trigger_event_id"], windows.get(u, ()), serving[u], *fresh.get(u, (0, 0)))
                                for r in recs if (u := r.user_id) in serving}, ids)

    def after_send(self) -> None:
        """Hand the batch's rows to the shadow process, once the batch's recommendations are on
        their way (the message costs the event loop a few µs per row: not in front of them)."""
        if self._to_shadow is not None:
            rows, ids = self._to_shadow
            self._to_shadow = None
            self.metrics.shadow_batches.labels(self.shadow.submit(rows, ids)).inc()

    def record(self, events: Sequence[ClickEvent]) -> None:
        """Add the batch's events to the trending counts :meth:`flush` writes (off the hot
        path; buckets older than the window are dropped, so an unflushed layer stays bounded)."""
        self._counts.add(events)

    async def flush(self) -> None:
        """Write the trending counts and online-evaluation totals gathered since the last
        flush, in one round trip (the worker flushes every second; what a crash loses is at
        most that second of an estimate)."""
        counts, self._counts = self._counts, self.trending.counter()
        sums, self._sums = self._sums, {}
        with redis_errors():
            async with self.r.pipeline(transaction=False) as pipe:
                await self.trending.queue(pipe, counts)
                if sums:
                    key = ONLINE_KEY + self.policy.name
                    minute = f"{key}:{int(time.time() // 60)}"
                    for h in (key, minute):
                        for f, v in sums.items():
                            if f.endswith(("|ndcg", "|overlap")):
                                pipe.hincrbyfloat(h, f, v)
                            else:
                                pipe.hincrby(h, f, int(v))
                    pipe.expire(minute, _ONLINE_TTL_S)
                await pipe.execute()
        await self.trending.refresh()  # the list the next batches' fallbacks and baselines read

    async def flush_forever(self, every_s: float = 1.0) -> None:
        """The worker's task: :meth:`flush` every ``every_s`` seconds (Redis trouble is logged
        and the counts of that flush dropped: they are estimates)."""
        while True:
            await asyncio.sleep(every_s)
            try:
                await self.flush()
            except TransientError as exc:
                log.warning("trending/online totals not written: %s", exc)


def _pick(cands: list[tuple[str, bytes]], n: int, seen: Any, cool: Any) -> list[str]:
    """The first ``n`` candidates (item, its id as bytes) neither in ``seen`` (ids as bytes) nor
    in ``cool``."""
    out = []
    for i, b in cands:
        if b not in seen and i not in cool:
            out.append(i)
            if len(out) == n:
                break
    return out
