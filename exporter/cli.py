"""``attnrec export`` and ``attnrec models``: the commands over export and the registry.

Importing this module imports neither torch nor onnx: the commands import what they need when
they run. Options come from :class:`attnrec.exporter.settings.ModelsSettings` (``ATTNREC_CHECKPOINT``,
``ATTNREC_REGISTRY`` else ``$ATTNREC_HOME/registry``, ``ATTNREC_PROMOTE``, ``ATTNREC_FORCE``,
``ATTNREC_MARGIN``, ``ATTNREC_TOP_K``, ``ATTNREC_QUANTIZE``; flags in ``--help``).

    attnrec export --checkpoint DIR [--registry DIR] [--promote] [--force] [--margin 0.02]
                   [--top-k 10] [--quantize]
    attnrec models list [--json]
    attnrec models promote VERSION [--force] [--margin 0.02]
    attnrec models rollback [--reason TEXT]

Exit codes: 0 done; 1 the model was rejected (parity, load checks, promotion gate);
2 bad usage or registry problem.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from attnrec.errors import AttnrecError, ConfigError, ModelError
from attnrec.registry import Registry

from .settings import ModelsSettings

__all__ = ["cmd_export", "cmd_models_list", "cmd_models_rollback", "fail"]

log = logging.getLogger(__name__)


def fail(exc: AttnrecError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, ModelError) else 2


def cmd_export(s: ModelsSettings, args: Any) -> int:
    """``attnrec export``: torch checkpoint -> ONNX, parity gate, publish, optional gated promote."""
    from .export import export_checkpoint

    if s.checkpoint is None:
        raise ConfigError("--checkpoint is required (or set ATTNREC_CHECKPOINT)")
    try:
        version = export_checkpoint(s.checkpoint, s.registry_dir, promote=s.promote, force=s.force,
                                    margin=s.margin, top_k=s.top_k, quantize=s.quantize)
    except AttnrecError as exc:
        return fail(exc)
    reg = Registry(s.registry_dir)
    m = reg.read_manifest(version)
    par = m["parity"]
    print(f"published {version} to {s.registry_dir}")
    print(f"  parity: max_abs_diff {par['max_abs_diff']:.2e}, top-10 agreement {par['top10_agreement']:.4f} "
          f"over {par['rows']} rows")
    if m.get("quantization", {}).get("requested"):
        print(f"  quantization: {m['quantization'].get('reason')}")
    if s.promote:
        last = reg.history()[-1]
        print(f"  promotion: {last['decision']} ({last['reason']})")
        if last["decision"] == "rejected":
            return 1
    print(f"  CURRENT: {reg.current_version()}")
    return 0


def cmd_models_list(s: ModelsSettings, args: Any) -> int:
    """``attnrec models list``: versions, newest first; * marks CURRENT (``--json``: and the history)."""
    reg = Registry(s.registry_dir)
    versions = reg.versions()
    if s.models_json:
        print(json.dumps({"registry": str(s.registry_dir), "current": reg.current_version(),
                          "versions": versions, "history": reg.history()}, indent=2))
        return 0
    if not versions:
        print(f"no versions in {s.registry_dir}")
        return 0
    print(f"{'':1} {'version':24} {'created_at':21} {'ndcg@10':>8} {'parity diff':>11} {'items':>7} parent")
    for v in versions:
        ndcg = f"{v['ndcg@10']:.4f}" if v["ndcg@10"] is not None else "-"
        diff = f"{v['parity_max_abs_diff']:.1e}" if v["parity_max_abs_diff"] is not None else "-"
        print(f"{'*' if v['current'] else ' '} {v['version']:24} {v['created_at'] or '-':21} {ndcg:>8} {diff:>11} "
              f"{v['n_items'] or '-':>7} {v['parent'] or '-'}")
    return 0


def cmd_models_rollback(s: ModelsSettings, args: Any) -> int:
    """``attnrec models rollback``: the previously promoted version becomes CURRENT again."""
    reg = Registry(s.registry_dir)
    before = reg.current_version()
    try:
        version = reg.rollback(reason=s.rollback_reason)
    except AttnrecError as exc:
        return fail(exc)
    print(f"rolled back: CURRENT {before} -> {version}")
    return 0
