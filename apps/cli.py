"""The ``attnrec`` command line: one entry point, every flag also from ``ATTNREC_<FLAG>``.

Sub-commands whose code needs torch (train, eval, export, trainer) import it only when run,
so ``attnrec worker`` works in an image without torch.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attnrec import __version__
from attnrec.errors import AttnrecError
from attnrec.settings import env_default, load_settings

__all__ = ["main", "setup_logging"]

log = logging.getLogger("attnrec")


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("kafka", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


def _stack(settings: Any) -> Any:
    from attnrec.stack import LocalStack

    return LocalStack(
        settings.stack_dir,
        kafka_port=settings.kafka_port,
        controller_port=settings.kafka_controller_port,
        redis_port=settings.redis_port,
        kafka_home=settings.kafka_home,
        redis_password=settings.redis_password.get_secret_value() if settings.redis_password else None,
        redis_appendfsync=settings.redis_appendfsync,
    )


def cmd_stack(args: argparse.Namespace) -> int:
    s = load_settings(home=args.home)
    st = _stack(s)
    if args.action == "up":
        st.up()
        print(f"kafka  {st.bootstrap}\nredis  {st.redis_url.split('@')[-1]}\ndata   {st.root}")
    elif args.action == "down":
        st.down()
        print("stack stopped")
    else:
        status = st.status()
        for name, info in status.items():
            state = f"running (pid {info['pid']})" if info["running"] else "stopped"
            print(f"{name:6} {state:22} {info['address']:22} log {info['log']}")
        return 0 if all(i["running"] for i in status.values()) else 3
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from stream.runner import run_worker

    overrides = {k: getattr(args, k) for k in ("batch_size", "batch_wait_ms", "web_port", "web_host", "group_id", "registry", "home")}
    run_worker(load_settings(**overrides))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from attnrec.replay import replay

    s = load_settings(home=args.home)
    n = replay(s, data=args.data, synthetic=args.synthetic, rate=args.rate, count=args.count, seed=args.seed, topic=args.topic)
    print(json.dumps({"produced": n, "topic": args.topic or s.clicks_topic}))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from attnrec.demo import run_demo

    return run_demo(load_settings(home=args.home), events=args.events, rate=args.rate, train_seconds=args.train_seconds, keep_stack=args.keep_stack)


def _optional(module: str, adder: str) -> Callable[[Any], None] | None:
    """A sub-command registration function from a module that may not be importable."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        log.debug("sub-commands of %s unavailable: %s", module, exc)
        return None
    fn = getattr(mod, adder, None)
    return fn if callable(fn) else None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="attnrec", description="Real-time attention-based recommendations over event streams.")
    p.add_argument("--version", action="version", version=f"attnrec {__version__}")
    p.add_argument("--log-level", default=env_default("log-level", "INFO"), help="logging level (ATTNREC_LOG_LEVEL)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sp = sub.add_parser("stack", help="local Kafka (KRaft) + Redis: up | down | status")
    sp.add_argument("action", choices=["up", "down", "status"])
    sp.add_argument("--home", type=Path, default=None, help="data dir (ATTNREC_HOME, default .attnrec)")
    sp.set_defaults(func=cmd_stack)

    sp = sub.add_parser("worker", help="run the streaming worker (faust)")
    sp.add_argument("--batch-size", type=int, default=None, help="max events per batch (ATTNREC_BATCH_SIZE, 256)")
    sp.add_argument("--batch-wait-ms", type=float, default=None, help="max wait to fill a batch (ATTNREC_BATCH_WAIT_MS, 5)")
    sp.add_argument("--web-port", type=int, default=None, help="lookup/health/metrics port (ATTNREC_WEB_PORT, 6066)")
    sp.add_argument("--web-host", default=None, help="bind address (ATTNREC_WEB_HOST, 127.0.0.1)")
    sp.add_argument("--group-id", default=None, help="consumer group (ATTNREC_GROUP_ID, attnrec-worker)")
    sp.add_argument("--registry", type=Path, default=None, help="model registry (ATTNREC_REGISTRY)")
    sp.add_argument("--home", type=Path, default=None, help="data dir (ATTNREC_HOME)")
    sp.set_defaults(func=cmd_worker)

    sp = sub.add_parser("replay", help="produce click events to the clicks topic")
    src = sp.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", type=Path, help="JSONL/CSV file of click events, or a DIGINETICA item-views CSV")
    src.add_argument("--synthetic", action="store_true", help="synthetic events with planted structure")
    sp.add_argument("--rate", default=env_default("rate", "1000"), help="events/s, or 'max' (ATTNREC_RATE)")
    sp.add_argument("--count", type=int, default=env_default("count", 10000), help="events to send (ATTNREC_COUNT)")
    sp.add_argument("--seed", type=int, default=env_default("seed", 7), help="synthetic seed (ATTNREC_SEED)")
    sp.add_argument("--topic", default=None, help="target topic (default ATTNREC_CLICKS_TOPIC)")
    sp.add_argument("--home", type=Path, default=None)
    sp.set_defaults(func=cmd_replay)

    sp = sub.add_parser("demo", help="the main job, end to end on the local stack")
    sp.add_argument("--events", type=int, default=env_default("demo-events", 6000), help="events to replay (ATTNREC_DEMO_EVENTS)")
    sp.add_argument("--rate", type=float, default=env_default("demo-rate", 500.0), help="replay rate events/s (ATTNREC_DEMO_RATE)")
    sp.add_argument("--train-seconds", type=float, default=env_default("demo-train-seconds", 60.0), help="training budget (ATTNREC_DEMO_TRAIN_SECONDS)")
    sp.add_argument("--keep-stack", action="store_true", default=env_default("keep-stack", False), help="leave Kafka/Redis running")
    sp.add_argument("--home", type=Path, default=None)
    sp.set_defaults(func=cmd_demo)

    for module, adder in (
        ("training.cli", "add_train_parser"),
        ("training.cli", "add_eval_parser"),
        ("exporter.cli", "add_export_parser"),
        ("exporter.cli", "add_models_parser"),
        ("exporter.cli", "add_trainer_parser"),
        ("attnrec.bench", "add_bench_parser"),
        ("stream.dashboard", "add_dashboard_parser"),
    ):
        fn = _optional(module, adder)
        if fn is not None:
            try:
                fn(sub)
            except ImportError as exc:  # a part of the product not installed in this image
                log.debug("%s.%s unavailable: %s", module, adder, exc)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    try:
        rc = args.func(args)
    except AttnrecError as exc:
        log.error("%s", exc)
        return 2
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    raise SystemExit(main())
