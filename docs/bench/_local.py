"""Shared start-up of the scripts in docs/bench: a fresh local stack on free ports and one
worker subprocess serving the benchmark's cached random-weight model (12k items, L=50).

Everything lives under ``$ATTNREC_HOME/bench-scripts/<name>`` (default ``.attnrec``); the
worker's settings come from the environment like any attnrec process, plus the
``ATTNREC_*=value`` overrides given on the script's command line.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root

from attnrec.apps.bench.models import ensure_model  # noqa: E402
from attnrec.apps.bench.settings import BenchSettings  # noqa: E402
from attnrec.apps.bench.worker import WorkerHandle  # noqa: E402
from attnrec.apps.stack import LocalStack, free_port  # noqa: E402
from attnrec.kafka_util import ensure_topics  # noqa: E402
from attnrec.settings import Settings, load_settings  # noqa: E402

CATALOG, MAX_LEN = 12_000, 50


@dataclass
class Bench:
    """A running stack, the worker's settings, the worker and the model's item ids."""

    stack: LocalStack
    s: Settings
    worker: WorkerHandle
    items: list[str]

    def close(self) -> None:
        self.worker.terminate()
        self.stack.down()


def start(name: str, overrides: list[str]) -> Bench:
    """Start the stack and a ready worker; ``overrides`` are ``ATTNREC_<SETTING>=value`` strings."""
    base = load_settings(BenchSettings)  # the model cache and the Kafka jars are the benchmark's and the stack's
    root = (base.home / "bench-scripts" / name).resolve()
    registry, items = ensure_model(base.bench_cache_dir, CATALOG, MAX_LEN)
    stack = LocalStack(root / "stack", kafka_port=free_port(), controller_port=free_port(), redis_port=free_port(),
                       kafka_libs=base.kafka_libs)
    stack.up()
    extra = dict(arg.split("=", 1) for arg in overrides)
    s = load_settings(home=root, registry=registry, kafka_bootstrap=stack.bootstrap, redis_url=stack.redis_url,
                      **{k.removeprefix("ATTNREC_").lower(): v for k, v in extra.items()})
    ensure_topics(s)
    worker = WorkerHandle(s, root, name="worker")
    worker.wait_ready()
    return Bench(stack, s, worker, items)
