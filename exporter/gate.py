"""The promotion gate: a published version becomes CURRENT unless its validation NDCG@10 is
worse than the current one's by more than a margin, or, when no model serves yet, it is not
better than the popularity fallback on the same validation cases (or an operator forces it);
every decision, with its figures, goes to the registry's history. The rule itself,
:func:`gate_decision`, lives with the retraining it judges (training/retrain.py), so the
prequential evaluation applies the same one."""

from __future__ import annotations

import logging
from typing import Any

from attnrec.errors import RegistryError
from attnrec.manifest import validation_ndcg
from attnrec.registry import Registry

from ..training.retrain import gate_decision

__all__ = ["gate_decision", "offline_gate", "online_decision", "promote_gated"]

log = logging.getLogger(__name__)


def online_decision(online: dict[str, Any] | None, margin: float, min_events: int) -> tuple[bool, str]:
    """The online gate: the candidate, shadow-scored, must beat the serving model's NDCG@10 on
    the same triggers (``online``: ``events``, ``shadow_ndcg@10``, ``serving_ndcg@10``) by
    ``margin`` (relative) over at least ``min_events`` next events."""
    if not online or not online.get("events"):
        return False, "no online figures: shadow-score it first (attnrec models shadow VERSION)"
    n, new, cur = int(online["events"]), float(online["shadow_ndcg@10"]), float(online["serving_ndcg@10"])
    if n < min_events:
        return False, f"online: {n} events shadow-scored, fewer than the {min_events} the gate needs"
    floor = cur * (1.0 + margin)
    verdict = ">=" if new >= floor else "<"
    return new >= floor, (f"online ndcg@10 {new:.5f} {verdict} {floor:.5f} (serving {cur:.5f} on the same {n} events, "
                          f"margin {margin:+.1%})")


def offline_gate(registry: Registry, version: str, margin: float) -> tuple[bool, str, dict[str, Any]]:
    """:func:`gate_decision` for a published version against CURRENT's manifest: (pass, reason,
    figures for the history entry)."""
    current = registry.current_version()
    cur_ndcg = None
    if current:
        try:
            cur_ndcg = validation_ndcg(registry.read_manifest(current).get("metrics", {}))
        except RegistryError:  # CURRENT names a version whose directory is gone: nothing to compare
            log.warning("CURRENT %s has no readable manifest; gating %s without a comparison", current, version)
    metrics = registry.read_manifest(version).get("metrics", {})
    new_ndcg = validation_ndcg(metrics)
    pop_ndcg = validation_ndcg(metrics.get("val_popular") or {}) if isinstance(metrics, dict) else None
    ok, reason = gate_decision(new_ndcg, cur_ndcg, margin, pop_ndcg if cur_ndcg is None else None)
    return ok, reason, {"new_ndcg@10": new_ndcg, "current_ndcg@10": cur_ndcg, "popular_ndcg@10": pop_ndcg,
                        "current": current, "margin": margin}


def promote_gated(registry: Registry, version: str, *, force: bool = False, margin: float = 0.02,
                  online: dict[str, Any] | None = None, online_margin: float | None = None,
                  online_min_events: int = 1000) -> dict[str, Any]:
    """Run the promotion gate for a published version; promote it or record the rejection.
    With ``online_margin`` the online gate (:func:`online_decision` on ``online``, the shadow
    comparison) must pass too; its figures join the history entry.

    Returns the history entry (``decision`` is promoted, forced or rejected).
    """
    ok, reason, figures = offline_gate(registry, version, margin)
    current = figures["current"]
    if online_margin is not None:
        ok_online, why = online_decision(online, online_margin, online_min_events)
        figures["online"] = {**(online or {}), "margin": online_margin, "min_events": online_min_events}
        reason = f"{reason}; {why}"
        ok = ok and ok_online
    if ok or force:
        decision = "promoted" if ok else "forced"
        if not ok:
            reason = f"forced despite: {reason}"
        log.info("promotion gate: %s %s (%s)", decision, version, reason)
        return registry.promote(version, reason=reason, decision=decision, figures=figures)
    log.warning("promotion gate: rejected %s (%s); CURRENT stays %s", version, reason, current)
    return registry.record(version, decision="rejected", reason=reason, figures=figures, previous=current)
