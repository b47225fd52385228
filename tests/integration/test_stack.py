"""`attnrec stack`: idempotent up, a status that tells the truth, a down that leaves nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from attnrec.apps.stack import LocalStack, free_port
from attnrec.apps.stack.processes import pid_alive

from attnrec.errors import StackError

pytestmark = pytest.mark.integration


def test_up_twice_is_harmless_and_down_leaves_nothing(tmp_path: Path) -> None:
    st = LocalStack(tmp_path / "stack", kafka_port=free_port(), controller_port=free_port(), redis_port=free_port(), kafka_heap="384m", kafka_jit="quick")
    try:
        st.up()
        first = st.status()
        assert first["kafka"]["running"] and first["redis"]["running"]
        st.up()  # second time: no new processes
        assert st.status() == first
    finally:
        pids = [st.status()[n]["pid"] for n in ("kafka", "redis")]
        st.down()
    status = st.status()
    assert not status["kafka"]["running"] and not status["redis"]["running"]
    for pid, marker in zip(pids, ("kafka.Kafka", "redis-server"), strict=True):
        assert pid is not None and not pid_alive(int(pid), marker)
    st.down()  # idempotent


def test_busy_port_is_reported(tmp_path: Path, stack: LocalStack) -> None:
    other = LocalStack(tmp_path / "s2", kafka_port=free_port(), controller_port=free_port(), redis_port=stack.redis_port, kafka_jit="quick")
    with pytest.raises(StackError, match="port .* is taken"):
        other.start_redis()
