"""Shared fixtures: the real local stack (Kafka KRaft + Redis) on free ports, unique topic
and group names per test, and a small exported model in a temporary registry."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# the stacks the tests start (and the demos and benches they run) use the JVM's first tier only:
# a faster start for many short-lived brokers (apps/stack/kafka_broker.py)
os.environ.setdefault("ATTNREC_KAFKA_JIT", "quick")


def data_dir() -> Path:
    return Path(os.environ.get("ATTNREC_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Kafka broker and one Redis server for the whole test session."""
    from attnrec.apps.stack import LocalStack, free_port

    st = LocalStack(tmp_path_factory.mktemp("stack"), kafka_port=free_port(), controller_port=free_port(), redis_port=free_port(), kafka_jit="quick")
    st.up()
    try:
        yield st
    finally:
        st.down()


@pytest.fixture(scope="module")
def cluster_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A 3-broker Kafka cluster (replication 3, min.insync.replicas 2) and a Redis Cluster (3
    masters, 3 replicas), on free ports, for the tests that need one: started by the first test
    of a module that uses it, killed after the module's last (it holds ~1.5 GB)."""
    from attnrec.apps.stack import LocalStack, free_port

    st = LocalStack(tmp_path_factory.mktemp("cluster"), kafka_port=free_port(), controller_port=free_port(),
                    redis_port=free_port(), brokers=3, kafka_ports=tuple(free_port() for _ in range(3)),
                    controller_ports=tuple(free_port() for _ in range(3)), redis_cluster=True,
                    redis_cluster_ports=tuple(free_port() for _ in range(6)),
                    redis_cluster_bus_ports=tuple(free_port() for _ in range(6)), kafka_heap="384m",
                    kafka_jit="quick")  # fmt: skip
    st.up()
    try:
        yield st
    finally:
        st.down(kill=True)


@pytest.fixture
def names() -> dict[str, str]:
    """Unique topic and group names for one test."""
    tag = uuid.uuid4().hex[:8]
    return {
        "clicks_topic": f"clicks-{tag}",
        "recs_topic": f"recs-{tag}",
        "dlq_topic": f"clicks-{tag}.dlq",
        "updates_topic": f"model-updates-{tag}",
        "group_id": f"attnrec-test-{tag}",
    }


@pytest.fixture(scope="session")
def registry_with_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding one promoted model trained briefly on synthetic events."""
    from tests.helpers import build_small_registry

    return build_small_registry(tmp_path_factory.mktemp("registry"))


# Hypothesis: bounded in `make test`; HYPOTHESIS_PROFILE=long for a longer hunt (docs/RELIABILITY.md)
from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("long", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


# The soak (tests/integration/test_soak.py, `make soak`) runs only when asked for: it is
# deselected, not skipped, from every other run.
def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("attnrec soak")
    g.addoption("--soak", action="store_true", help="run the soak (tests marked soak) and nothing else")
    g.addoption("--soak-events", type=int, default=1_000_000, help="events in the soak (default 10^6)")
    g.addoption("--soak-rate", type=float, default=540.0, help="events/s of the soak's producer (default 540: 10^6 events in ~31 min)")
    g.addoption("--soak-fault-every", type=float, default=300.0, help="seconds between faults (default 300)")
    g.addoption("--soak-plot", default=str(REPO / "docs" / "img" / "soak-memory.png"),
                help="where the memory plot goes (its .json beside it)")
    c = parser.getgroup("attnrec cluster faults")
    c.addoption("--cluster-faults", action="store_true",
                help="also run the full set of fault scenarios on the 3-broker Kafka and Redis Cluster (make faults); "
                     "without it only the short one runs")


# The full cluster fault set (tests marked cluster_full, `make faults`) runs only when asked for,
# like the soak: deselected, not skipped, from `make test`, which runs the short scenario.
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    want_soak = config.getoption("--soak")
    want_full = config.getoption("--cluster-faults")
    keep = [it for it in items if (it.get_closest_marker("soak") is not None) == want_soak
            and (want_full or it.get_closest_marker("cluster_full") is None)]
    if len(keep) < len(items):
        config.hook.pytest_deselected(items=[it for it in items if it not in keep])
        items[:] = keep
