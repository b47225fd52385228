"""Hot reload while events flow: a promotion switches the version within 5 s with no event
lost; a broken model is never swapped in; rollback restores the previous version."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from attnrec.exporter.export import export_checkpoint
from attnrec.exporter.testing import write_random_checkpoint
from attnrec.stream.core.buffer import user_keys

from attnrec.events import ClickEvent
from attnrec.kafka_util import ensure_topics, make_consumer
from attnrec.redis_util import redis_sync
from attnrec.registry import Registry
from tests.feeding import Feeder
from tests.helpers import WorkerProc, settings_for

pytestmark = pytest.mark.integration


class Flow:
    """Produces events at a steady rate and records when each model version first served."""

    def __init__(self, s: Any, items: list[str]) -> None:
        self.s, self.items = s, items
        self.feeder = Feeder(s, linger_ms=0)
        self.first_seen: dict[str, float] = {}
        self.arrivals: list[tuple[float, str]] = []  # (time, version) at each change of version
        self.stop = threading.Event()
        self.t_cons = threading.Thread(target=self._consume, daemon=True)
        self.ready = threading.Event()

    def _event(self, i: int) -> ClickEvent:
        return ClickEvent(f"hr-{i}", f"hr-{i % 25}", self.items[i % len(self.items)], "click", int(time.time() * 1000))

    def _consume(self) -> None:
        c = make_consumer(self.s, self.s.recs_topic, group_id=None, auto_offset_reset="latest")
        while not c.assignment():
            c.poll(timeout_ms=100)
        c.seek_to_end()
        for tp in c.assignment():
            c.position(tp)
        self.ready.set()
        while not self.stop.is_set():
            for recs in c.poll(timeout_ms=100).values():
                now = time.monotonic()
                for m in recs:
                    v = orjson.loads(m.value)["model_version"]
                    self.first_seen.setdefault(v, now)
                    if not self.arrivals or self.arrivals[-1][1] != v:
                        self.arrivals.append((now, v))
        c.close()

    def start(self) -> Flow:
        self.t_cons.start()
        assert self.ready.wait(30)
        self.feeder.start(rate=100, make=self._event)
        return self

    def wait_version(self, v: str, since: float, timeout: float = 5.0) -> float:
        deadline = since + timeout + 2.0  # measured against `since`; the +2 s only bounds the wait
        while time.monotonic() < deadline:
            for t, seen in list(self.arrivals):
                if seen == v and t >= since:
                    return t - since
            time.sleep(0.05)
        raise AssertionError(f"version {v} not served within {timeout}s (seen: {self.first_seen})")

    def finish(self) -> None:
        self.stop.set()
        self.feeder.close()
        if self.t_cons.is_alive():
            self.t_cons.join(10)


def test_promote_reject_and_rollback_while_events_flow(stack: Any, names: dict[str, str], registry_with_model: Path, tmp_path: Path) -> None:
    reg_root = tmp_path / "registry"
    shutil.copytree(registry_with_model, reg_root)
    reg = Registry(reg_root)
    v1 = reg.current_version()
    assert v1
    items = [str(i) for i in reg.read_manifest(v1)["popularity"]][:30]
    s = settings_for(stack, names, reg_root, reload_poll_s=0.5, buffer_len=1000)
    ensure_topics(s)
    w = WorkerProc(s, tmp_path)
    flow = Flow(s, items)
    try:
        _exercise(w, flow, reg, reg_root, v1, tmp_path, s)
    finally:  # never leave a worker behind, whatever failed
        flow.finish()
        if w.proc.poll() is None:
            w.terminate()


def _exercise(w: WorkerProc, flow: Flow, reg: Registry, reg_root: Path, v1: str, tmp_path: Path, s: Any) -> None:
    try:
        assert w.wait_ready()["model_version"] == v1
        flow.start()
        time.sleep(2)
        # 1. a good new model: served within 5 s of promotion
        ckpt = write_random_checkpoint(tmp_path / "ckpt2", n_items=120, max_len=20, seed=5)
        v2 = export_checkpoint(ckpt, reg_root)
        t = time.monotonic()
        reg.promote(v2, reason="test")
        assert flow.wait_version(v2, t) <= 5.0

        # 2. a broken model (file corrupted after publishing): never swapped in
        ckpt3 = write_random_checkpoint(tmp_path / "ckpt3", n_items=120, max_len=20, seed=6)
        v3 = export_checkpoint(ckpt3, reg_root)
        model = reg.version_dir(v3) / "model.onnx"
        model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])  # truncated
        reg.promote(v3, reason="test: broken on purpose", verify=False)
        time.sleep(3)
        assert v3 not in flow.first_seen
        code, body = w.get("/readyz")
        ready = orjson.loads(body)
        assert ready["model_version"] == v2 and "sha256" in (ready["model_error"] or ""), ready
        _, metrics = w.get("/metrics")
        assert b'attnrec_model_reloads_total{result="failure"} 1.0' in metrics

        # 3. rollback: away from the broken version, then once more to the first model
        assert reg.rollback(reason="test: broken") == v2
        time.sleep(1.5)
        t = time.monotonic()
        assert reg.rollback(reason="test: back to the first") == v1
        assert flow.wait_version(v1, t) <= 5.0
        time.sleep(1.5)
    finally:
        flow.finish()
    # no event lost or applied twice across the swaps
    time.sleep(3)
    r = redis_sync(s)
    by_user = {u: len(evs) for u, evs in flow.feeder.sent_by_user().items()}
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = {u: r.llen(user_keys(u)[0]) for u in by_user}
        if got == by_user:
            break
        time.sleep(0.5)
    w.terminate()
    assert got == by_user, (sum(got.values()), sum(by_user.values()))
