"""The optional stages of the batch path, and the one place they are built from the settings
(:func:`build_stages`). The interface is :class:`attnrec.stream.core.stage.Stage`.

| stage | setting | hooks |
| --- | --- | --- |
| ``catalog`` (:mod:`.catalog`) | ``CATALOG=true`` | begin: the availability state as of now; rewrite: again, just before the send |
| ``policy`` (:mod:`.policy`) | ``CATALOG``, ``DENY_ITEMS``, ``ALLOW_/DENY_CATEGORIES``, cool-downs with ``EXCLUDE_SEEN=false`` | begin: ``batch.blocked`` / ``held``; exclude: the graph's mask; rewrite: items blocked since begin leave the lists |
| ``trending`` (:mod:`.trending`) | ``TRENDING`` (on) | rewrite: fallbacks get trending now; observe: counts; run: flush |
| ``boosts`` (:mod:`.policy`) | ``BOOSTS`` | rewrite: scores added, lists reordered |
| ``shadow`` (:mod:`.rollout`) | ``SHADOW_FRACTION`` / ``INTERLEAVE_FRACTION`` > 0 and ``ONLINE_EVAL``; active while a SHADOW version exists | swap; rewrite: interleave; observe: to the shadow process |
| ``online`` (:mod:`.online`) | ``ONLINE_EVAL`` (on) | observe: score next events, remember lists; run: flush |
| ``timing`` (:mod:`.timing`) | ``TIMING_HEADERS`` | step: milestones; rewrite: the header |
| ``profile`` (:mod:`.profile`) | the benchmark only | step: time per step and per stage |
"""

from __future__ import annotations

from typing import Any

from attnrec.settings import Settings

from ..core.metrics import WorkerMetrics
from ..core.model import ModelWatcher
from ..core.stage import Stage, Stages

__all__ = ["build_stages"]


def build_stages(s: Settings, client: Any, metrics: WorkerMetrics, watcher: ModelWatcher | None = None, *,
                 profile: bool = False) -> Stages:
    """The stages ``s`` configures, in the order their hooks run (``client``: the Redis client
    the shared ones write to). ``profile``: the benchmark's stage profile, last."""
    from .catalog import CatalogStage
    from .online import OnlineStage
    from .policy import BoostStage, Policy, PolicyStage
    from .trending import TrendingStage

    policy = Policy.from_settings(s)
    catalog = CatalogStage(s, client, metrics) if s.catalog else None
    trending = TrendingStage(client, s.trending_window_s, k=s.top_k) if s.trending else None
    online = OnlineStage(client, metrics, s.policy_name, trending) if s.online_eval else None
    stages: list[Stage | None] = [
        catalog,
        PolicyStage(policy, catalog) if catalog is not None or policy.has_rules else None,
        trending,
        BoostStage(policy, catalog) if policy.boosts else None,
    ]
    if online is not None and (s.shadow_fraction > 0 or s.interleave_fraction > 0):
        from .rollout import ShadowStage

        stages.append(ShadowStage(s, metrics, watcher, online))
    stages.append(online)
    if s.timing_headers:
        from .timing import TimingStage

        stages.append(TimingStage())
    prof = None
    if profile:
        from .profile import ProfileStage

        stages.append(prof := ProfileStage())
    built = Stages([st for st in stages if st is not None])
    if prof is not None:
        prof.attach(built)
    return built
