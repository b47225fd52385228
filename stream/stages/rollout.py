"""Rolling out a candidate version on live traffic, on the batch path: :class:`ShadowStage`.

The registry's ``SHADOW`` version (``attnrec models shadow VERSION``), loaded and checked by the
model watcher, is the candidate. While it is not the serving version the stage is active:

- shadow scoring (``SHADOW_FRACTION`` of users): after the batch's records are handed to the
  producer, its rows go to the shadow process (:mod:`attnrec.stream.stages.shadow`), whose
  lists come back later and join the online evaluation of the recommendations they shadow;
- interleaving (``INTERLEAVE_FRACTION`` of users): the candidate scores those users' rows on the
  hot path and the published list is the team-draft merge (:mod:`attnrec.stream.stages.interleave`),
  each team's part remembered for the online evaluation.

Both need the online evaluation (:class:`attnrec.stream.stages.online.OnlineStage`): without
it there is nothing to compare, and the stage is not built.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Mapping, Sequence

from attnrec.settings import Settings

from ..core.metrics import WorkerMetrics
from ..core.model import LoadedModel, ModelWatcher
from ..core.stage import Batch, Stage
from .candidate import candidate_lists, overlap
from .interleave import in_experiment, team_draft
from .online import OnlineStage
from .shadow import Shadow

__all__ = ["ShadowStage"]

log = logging.getLogger(__name__)


class ShadowStage(Stage):
    """The candidate version beside the serving one: shadow scoring and interleaving."""

    name = "shadow"
    active = False

    def __init__(self, s: Settings, metrics: WorkerMetrics, watcher: ModelWatcher | None, online: OnlineStage) -> None:
        self.s = s
        self.metrics = metrics
        self.watcher = watcher
        self.online = online
        self.shadow = Shadow(s.shadow_fraction, k=s.top_k, exclude_seen=s.exclude_seen, exclude_window=s.exclude_window,
                             cache_bytes=int(s.cache_mb * 2**20), cache_dtype=s.cache_dtype)
        online.join(self._join)

    @property
    def candidate(self) -> LoadedModel | None:
        return self.shadow.model

    def set_candidate(self, m: LoadedModel | None) -> None:
        """The version to shadow-score (and interleave with), or None."""
        old = self.shadow.model
        if old is not None:
            self.metrics.shadow_info.labels(old.version).set(0)
        self.shadow.set_model(m)
        if m is not None:
            self.metrics.shadow_info.labels(m.version).set(1)

    def swap(self, model: LoadedModel | None) -> bool:
        pending = self.watcher.take_pending_shadow() if self.watcher is not None else None
        if pending is not None:
            self.set_candidate(pending[0])
        cand = self.shadow.model  # a version that serves is not shadowed (promoted while shadowed)
        on = cand is not None and model is not None and cand.version != model.version
        changed, self.active = on != self.active, on
        return changed

    async def rewrite(self, batch: Batch) -> None:
        """Note the serving lists the candidate is compared with; interleave the users in the
        experiment; keep the rows the shadow process gets once the batch is sent."""
        model, res = batch.model, batch.applied
        if model is None or res is None:
            return
        windows: dict[str, Sequence[bytes]] = {}
        for r in batch.recs:  # the longer of the scored row's window and what Redis returned (EXCLUDE_WINDOW)
            row, raw = batch.window(r.user_id), res.raw.get(r.user_id) or ()
            windows[r.user_id] = raw if len(raw) > len(row) else row
        serving = {r.user_id: r.items for r in batch.recs if not r.fallback}
        if self.s.interleave_fraction > 0:
            await self._interleave(batch, model, windows)
        new = Counter(ev.user_id for (ev, _, _), a in zip(batch.parsed.events, res.applied, strict=True) if a)
        batch.extra[self.name] = ({u: (r.payload["trigger_event_id"], windows[u], serving[u], res.seq.get(u, 0), new[u])
                                   for r in batch.recs if (u := r.user_id) in serving}, batch.blocked)

    def observe(self, batch: Batch) -> None:
        """Hand the batch's rows to the shadow process (after the batch's records: the message
        costs the event loop a few µs per row, not in front of them)."""
        rows = batch.extra.pop(self.name, None)
        if rows is not None:
            self.metrics.shadow_batches.labels(self.shadow.submit(*rows)).inc()

    async def _interleave(self, batch: Batch, model: LoadedModel, windows: Mapping[str, Sequence[bytes]]) -> None:
        """Team-draft merge of the serving and the candidate's lists for the users in the
        experiment (the candidate scores them now, on the hot path: their lists are published)."""
        cand, k, s = self.shadow.model, self.s.top_k, self.s
        chosen = [r for r in batch.recs if not r.fallback and in_experiment(r.user_id, s.interleave_fraction)]
        if cand is None or not chosen:
            return
        wins = {r.user_id: windows[r.user_id] for r in chosen}
        lists = await asyncio.get_running_loop().run_in_executor(None, lambda: candidate_lists(
            cand, wins, list(wins), k=k, exclude_seen=s.exclude_seen, exclude_window=s.exclude_window,
            blocked=batch.blocked))
        merged = 0
        for r in chosen:
            clist = lists.get(r.user_id)
            if clist and batch.held is not None:  # the published list keeps the policy's cool-downs
                cool = set(batch.held(wins[r.user_id]))
                clist = [(i, sc) for i, sc in clist if i not in cool]
            if not clist:
                continue
            p = r.payload
            score = {"serving": {it["item_id"]: it["score"] for it in p["items"]}, "candidate": dict(clist)}
            mix = team_draft(r.items, [i for i, _ in clist], k, seed=p["trigger_event_id"])
            p["items"] = [{"item_id": i, "score": score[t][i], "team": t} for i, t in mix]
            p["interleave"] = {"serving": model.version, "candidate": cand.version}
            # the published list is a merge: credit goes to the teams
            r.lists["model"] = (f"interleaved:{cand.version}", [i for i, _ in mix])
            r.lists["team-serving"] = (cand.version, [i for i, t in mix if t == "serving"])
            r.lists["team-candidate"] = (cand.version, [i for i, t in mix if t == "candidate"])
            merged += 1
        self.metrics.interleaved.inc(merged)

    def _join(self) -> None:
        """The shadow's finished lists join the recommendations they shadow (before the users'
        next events are scored), with the serving list they are paired with."""
        m, online = self.metrics, self.online
        for res in self.shadow.drain():
            m.shadow_ms.observe(res.ms)
            for graph, n in res.rows.items():
                m.shadow_rows.labels(graph).inc(n)
            joined, ov = 0, 0.0
            for user, (tag, cand, serving) in res.lists.items():
                if online.online.add(user, tag, {"shadow": (res.version, cand), "shadow-base": (res.version, serving)}):
                    joined += 1
                    o = overlap(cand, serving)
                    ov += o
                    m.shadow_overlap.observe(o)
            if joined:
                online.add(f"shadow|{res.version}|lists", joined)
                online.add(f"shadow|{res.version}|overlap", ov)

    def close(self) -> None:
        self.shadow.close()
