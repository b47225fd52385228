"""``attnrec export`` and ``attnrec models`` sub-commands (wired into ``attnrec/cli.py``).

Importing this module imports neither torch nor onnx: handlers import what they need when
they run. Every flag's default also reads ``ATTNREC_<FLAG>`` from the environment
(``--top-k`` <- ``ATTNREC_TOP_K``, ``--registry`` <- ``ATTNREC_REGISTRY``, else
``$ATTNREC_HOME/registry``, else ``.attnrec/registry``).

    attnrec export --checkpoint DIR [--registry DIR] [--promote] [--force] [--margin 0.02]
                   [--top-k 10] [--quantize]
    attnrec models list [--json]
    attnrec models promote VERSION [--force] [--margin 0.02]
    attnrec models rollback [--reason TEXT]

Exit codes: 0 done; 1 the model was rejected (parity, load checks, promotion gate);
2 bad usage or registry problem.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from attnrec.errors import AttnrecError, ConfigError, ModelError, RegistryError
from attnrec.settings import env_default

__all__ = ["add_export_parser", "add_models_parser", "add_trainer_parser", "default_registry"]

log = logging.getLogger(__name__)


def default_registry() -> Path:
    """``ATTNREC_REGISTRY``, else ``$ATTNREC_HOME/registry``, else ``.attnrec/registry``."""
    reg = env_default("registry", "")
    if reg:
        return Path(reg)
    return Path(env_default("home", ".attnrec")) / "registry"


def _add_registry(p: argparse.ArgumentParser) -> None:
    p.add_argument("--registry", type=Path, default=default_registry(),
                   help="model registry directory (env ATTNREC_REGISTRY; default %(default)s)")


def _add_gate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", default=env_default("force", False),
                   help="promote even when the NDCG@10 gate says no (env ATTNREC_FORCE)")
    p.add_argument("--margin", type=float, default=env_default("margin", 0.02),
                   help="largest tolerated relative drop of validation NDCG@10 (env ATTNREC_MARGIN; default %(default)s)")


def add_export_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``attnrec export``: torch checkpoint -> ONNX, parity gate, publish, optional gated promote."""
    p = subparsers.add_parser("export", help="export a checkpoint to ONNX, check it and publish it to the registry",
                              description=add_export_parser.__doc__)
    ckpt = env_default("checkpoint", "")
    p.add_argument("--checkpoint", type=Path, required=not ckpt, default=Path(ckpt) if ckpt else None,
                   help="training checkpoint directory (env ATTNREC_CHECKPOINT)")
    _add_registry(p)
    p.add_argument("--promote", action="store_true", default=env_default("promote", False),
                   help="promote through the NDCG@10 gate after publishing (env ATTNREC_PROMOTE)")
    _add_gate(p)
    p.add_argument("--top-k", type=int, default=env_default("top-k", 10),
                   help="K of the in-graph top-K (env ATTNREC_TOP_K; default %(default)s)")
    p.add_argument("--quantize", action="store_true", default=env_default("quantize", False),
                   help="try dynamic int8 quantisation; used only if faster here and < 1%% relative "
                        "NDCG@10 loss (env ATTNREC_QUANTIZE)")
    p.set_defaults(func=_run_export)
    return p


def add_models_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``attnrec models list|promote VERSION|rollback``: inspect and move the registry's CURRENT."""
    p = subparsers.add_parser("models", help="list, promote or roll back registry versions",
                              description=add_models_parser.__doc__)
    sub = p.add_subparsers(dest="models_command", required=True)
    ls = sub.add_parser("list", help="versions, newest first; * marks CURRENT")
    _add_registry(ls)
    ls.add_argument("--json", action="store_true", help="print versions and history as JSON")
    ls.set_defaults(func=_run_list)
    pr = sub.add_parser("promote", help="promote a published version through the NDCG@10 gate")
    pr.add_argument("version")
    _add_registry(pr)
    _add_gate(pr)
    pr.set_defaults(func=_run_promote)
    rb = sub.add_parser("rollback", help="make the previously promoted version CURRENT again")
    _add_registry(rb)
    rb.add_argument("--reason", default="manual rollback", help="recorded in HISTORY.jsonl")
    rb.set_defaults(func=_run_rollback)
    return p


def add_trainer_parser(subparsers: Any) -> argparse.ArgumentParser:
    """``attnrec trainer --every 10m``: archive clicks, retrain, export, gated promote, repeat."""
    from exporter.trainer import add_trainer_arguments

    p = subparsers.add_parser("trainer", help="periodic retrain -> export -> gated promote",
                              description=add_trainer_parser.__doc__)
    _add_registry(p)
    _add_gate(p)
    add_trainer_arguments(p)
    p.set_defaults(func=_run_trainer)
    return p


def _fail(exc: AttnrecError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1 if isinstance(exc, ModelError) else 2


def _run_export(args: argparse.Namespace) -> int:
    from exporter.export import export_checkpoint
    from exporter.registry import Registry

    try:
        version = export_checkpoint(args.checkpoint, args.registry, promote=args.promote, force=args.force,
                                    margin=args.margin, top_k=args.top_k, quantize=args.quantize)
    except AttnrecError as exc:
        return _fail(exc)
    reg = Registry(args.registry)
    m = reg.read_manifest(version)
    par = m["parity"]
    print(f"published {version} to {args.registry}")
    print(f"  parity: max_abs_diff {par['max_abs_diff']:.2e}, top-10 agreement {par['top10_agreement']:.4f} "
          f"over {par['rows']} rows")
    if m.get("quantization", {}).get("requested"):
        print(f"  quantization: {m['quantization'].get('reason')}")
    if args.promote:
        last = reg.history()[-1]
        print(f"  promotion: {last['decision']} ({last['reason']})")
        if last["decision"] == "rejected":
            return 1
    print(f"  CURRENT: {reg.current_version()}")
    return 0


def _run_list(args: argparse.Namespace) -> int:
    from exporter.registry import Registry

    reg = Registry(args.registry)
    versions = reg.versions()
    if args.json:
        print(json.dumps({"registry": str(args.registry), "current": reg.current_version(),
                          "versions": versions, "history": reg.history()}, indent=2))
        return 0
    if not versions:
        print(f"no versions in {args.registry}")
        return 0
    print(f"{'':1} {'version':24} {'created_at':21} {'ndcg@10':>8} {'parity diff':>11} {'items':>7} parent")
    for v in versions:
        ndcg = f"{v['ndcg@10']:.4f}" if v["ndcg@10"] is not None else "-"
        diff = f"{v['parity_max_abs_diff']:.1e}" if v["parity_max_abs_diff"] is not None else "-"
        print(f"{'*' if v['current'] else ' '} {v['version']:24} {v['created_at'] or '-':21} {ndcg:>8} {diff:>11} "
              f"{v['n_items'] or '-':>7} {v['parent'] or '-'}")
    return 0


def _run_promote(args: argparse.Namespace) -> int:
    from exporter.export import promote_gated
    from exporter.registry import Registry

    try:
        entry = promote_gated(Registry(args.registry), args.version, force=args.force, margin=args.margin)
    except (RegistryError, ModelError) as exc:
        return _fail(exc)
    print(f"{entry['decision']}: {args.version} ({entry['reason']})")
    return 1 if entry["decision"] == "rejected" else 0


def _run_rollback(args: argparse.Namespace) -> int:
    from exporter.registry import Registry

    reg = Registry(args.registry)
    before = reg.current_version()
    try:
        version = reg.rollback(reason=args.reason)
    except (RegistryError, ModelError) as exc:
        return _fail(exc)
    print(f"rolled back: CURRENT {before} -> {version}")
    return 0


def _run_trainer(args: argparse.Namespace) -> int:
    from exporter.trainer import run_from_args

    try:
        return run_from_args(args)
    except (ConfigError, RegistryError, ModelError) as exc:
        return _fail(exc)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m exporter.cli``) until ``attnrec/cli.py`` wires these in."""
    logging.basicConfig(level=env_default("log-level", "INFO"), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="attnrec")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_models_parser(sub)
    add_trainer_parser(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
