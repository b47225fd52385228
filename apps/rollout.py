"""Rolling out a model on live traffic: ``attnrec models shadow`` and the online gate of
``attnrec models promote``.

    attnrec models shadow VERSION      workers shadow-score VERSION (SHADOW in the registry)
    attnrec models shadow              the comparison so far (--json: as JSON)
    attnrec models shadow --off        stop shadowing
    attnrec models promote VERSION [--online-margin M --online-min-events N]

The figures are the workers' online evaluation (:mod:`attnrec.stream.stages.online`) read from Redis: the
shadow's NDCG@10 / HR@10 against the serving model's on the same triggers, overlap@10 and, with
``ATTNREC_INTERLEAVE_FRACTION``, the team-draft win rate (docs/DEPLOY.md, "Rolling out a model").
"""

from __future__ import annotations

import json
import logging
from typing import Any

from attnrec.errors import AttnrecError, ConfigError, TransientError
from attnrec.redis_util import redis_sync
from attnrec.registry import Registry
from attnrec.settings import Settings

from ..exporter.cli import fail
from ..exporter.gate import promote_gated
from ..exporter.settings import ModelsSettings, TrainerSettings
from ..stream.stages.online import ONLINE_KEY, comparisons, totals
from ..stream.stages.policy import Policy

__all__ = ["cmd_models_shadow", "cmd_models_promote", "cmd_trainer", "online_figures"]

log = logging.getLogger(__name__)


def online_figures(s: Settings) -> list[dict[str, Any]]:
    """Every candidate version's comparison under this deployment's policy (from Redis)."""
    import redis

    try:
        fields = redis_sync(s, timeout_s=5.0).hgetall(ONLINE_KEY + Policy.from_settings(s).name)
    except redis.RedisError as exc:
        raise TransientError(f"cannot read the online figures from {s.redis_url}: {exc}") from None
    return comparisons(totals(fields))


def _fmt(x: Any, spec: str = ".4f") -> str:
    return "-" if x is None else format(x, spec)


def cmd_models_shadow(s: ModelsSettings, args: Any) -> int:
    reg = Registry(s.registry_dir)
    version = getattr(args, "version", None)
    try:
        if version and s.shadow_off:
            raise ConfigError("give a VERSION to shadow or --off, not both")
        if s.shadow_off:
            before = reg.shadow_version()
            reg.set_shadow(None, reason="attnrec models shadow --off")
            print(f"shadow scoring stopped (was {before or 'none'})")
            return 0
        if version:
            reg.set_shadow(version, reason="attnrec models shadow")
            print(f"workers now shadow-score {version} beside CURRENT {reg.current_version()} "
                  f"(ATTNREC_SHADOW_FRACTION of users; interleaved for ATTNREC_INTERLEAVE_FRACTION of users)")
            return 0
        rows = online_figures(s)
    except AttnrecError as exc:
        return fail(exc)
    current = reg.shadow_version()
    if s.models_json:
        print(json.dumps({"serving": reg.current_version(), "shadow": current, "candidates": rows}, indent=2))
        return 0
    print(f"serving {reg.current_version() or '-'}, shadow {current or '-'}")
    if not rows:
        print("no shadow figures yet")
    for c in rows:
        print(f"{c['version']}: {c['events']} next events; NDCG@10 shadow {_fmt(c['shadow_ndcg@10'])} vs serving "
              f"{_fmt(c['serving_ndcg@10'])}; HR@10 {_fmt(c['shadow_hr@10'])} vs {_fmt(c['serving_hr@10'])}; "
              f"overlap@10 {_fmt(c['overlap@10'], '.3f')} over {c['lists']} lists")
        il = c.get("interleave")
        if il:
            lo, hi = il["ci95"]
            print(f"  interleaving: {il['impressions']} impressions, candidate won {il['candidate_wins']}, serving "
                  f"{il['serving_wins']}; win rate {_fmt(il['win_rate'], '.3f')} (95% {_fmt(lo, '.3f')}-{_fmt(hi, '.3f')}): "
                  f"{il['verdict']}")
    return 0


def cmd_models_promote(s: ModelsSettings, args: Any) -> int:
    """``attnrec models promote VERSION``: the NDCG@10 gate (``--force`` overrides it) and, with
    ``--online-margin``, the online gate on the shadow comparison."""
    try:
        online = None
        if s.online_margin is not None:
            online = next((c for c in online_figures(s) if c["version"] == args.version), None)
        reg = Registry(s.registry_dir)
        entry = promote_gated(reg, args.version, force=s.force, margin=s.margin, online=online,
                              online_margin=s.online_margin, online_min_events=s.online_min_events)
        if entry["decision"] != "rejected" and reg.shadow_version() == args.version:
            reg.set_shadow(None, reason=f"{args.version} promoted")  # it serves now: nothing left to shadow
    except AttnrecError as exc:
        return fail(exc)
    print(f"{entry['decision']}: {args.version} ({entry['reason']})")
    return 1 if entry["decision"] == "rejected" else 0


def cmd_trainer(s: TrainerSettings, args: Any) -> int:
    """``attnrec trainer``: :func:`attnrec.exporter.trainer.cmd_trainer`, with the workers' shadow
    comparison for ``TRAINER_ROLLOUT=shadow``."""
    from ..exporter.trainer import cmd_trainer as run

    def online(version: str) -> dict[str, Any] | None:
        return next((c for c in online_figures(s) if c["version"] == version), None)

    return run(s, args, online=online)
