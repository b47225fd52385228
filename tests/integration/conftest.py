"""Fixtures of the integration tests that share a world: the fault scenarios and their report."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from attnrec.kafka_util import ensure_topics
from tests.faultkit import SESSION_TIMEOUT_S, Scenario
from tests.helpers import settings_for


@pytest.fixture(scope="session")
def report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """Collects each scenario's measurements; written once at the end of the session."""
    out: dict[str, Any] = {}
    yield out
    if out:
        path = Path(os.environ.get("ATTNREC_RELIABILITY_JSON") or tmp_path_factory.getbasetemp() / "reliability.json")
        path.write_text(json.dumps(out, indent=2, sort_keys=True))
        print(f"\nreliability measurements -> {path}\n{json.dumps(out, indent=2, sort_keys=True)}")


@pytest.fixture(scope="session")
def known_items(registry_with_model: Path) -> list[str]:
    from attnrec.registry import Registry

    reg = Registry(registry_with_model)
    return [str(i) for i in reg.read_manifest(reg.current_version())["popularity"]][:50]


@pytest.fixture
def scenario(stack: Any, names: dict[str, str], registry_with_model: Path, known_items: list[str],
             tmp_path: Path) -> Iterator[Callable[..., Scenario]]:  # fmt: skip
    """``scenario(**settings)``: a :class:`Scenario` on the test stack with these settings."""
    made: list[Scenario] = []

    def make(**settings: Any) -> Scenario:
        s = settings_for(stack, names, registry_with_model, **settings)
        ensure_topics(s)
        made.append(Scenario(s, known_items, tmp_path))
        return made[-1]

    yield make
    with ExitStack() as stack:
        for sc in made:
            stack.callback(sc.close)


@pytest.fixture
def cluster_scenario(cluster_stack: Any, names: dict[str, str], registry_with_model: Path, known_items: list[str],
                     tmp_path: Path) -> Iterator[Callable[..., Scenario]]:  # fmt: skip
    """``cluster_scenario(**settings)``: a :class:`Scenario` on the 3-broker Kafka and the Redis
    Cluster, its topics at replication factor 3 with ``min.insync.replicas=2``. Afterwards every
    broker and Redis node is running again and the Redis Cluster is whole (the next test's)."""
    made: list[Scenario] = []

    def make(**settings: Any) -> Scenario:
        settings.setdefault("replication_factor", 3)
        settings.setdefault("min_insync_replicas", 2)
        s = settings_for(cluster_stack, names, registry_with_model, **settings)
        ensure_topics(s)
        made.append(Scenario(s, known_items, tmp_path))
        return made[-1]

    yield make
    with ExitStack() as stack:
        stack.callback(cluster_stack.heal)
        for sc in made:
            stack.callback(sc.close)




@pytest.fixture
def fast_group_eviction(monkeypatch: pytest.MonkeyPatch) -> None:
    """faust reads ``BROKER_SESSION_TIMEOUT`` / ``BROKER_HEARTBEAT_INTERVAL`` from the environment
    (the workers inherit it): a lost group member is evicted in ~10 s, not faust's 60 s."""
    monkeypatch.setenv("BROKER_SESSION_TIMEOUT", str(SESSION_TIMEOUT_S))
    monkeypatch.setenv("BROKER_HEARTBEAT_INTERVAL", "1")
