"""Shared fixtures: the real local stack (Kafka KRaft + Redis) on free ports, unique topic
and group names per test, and a small exported model in a temporary registry."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    return Path(os.environ.get("ATTNREC_DATA_DIR", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """One Kafka broker and one Redis server for the whole test session."""
    from apps.stack import LocalStack, free_port

    st = LocalStack(tmp_path_factory.mktemp("stack"), kafka_port=free_port(), controller_port=free_port(), redis_port=free_port())
    st.up()
    try:
        yield st
    finally:
        st.down()


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
