"""Shadow scoring and interleaving through the worker's own batch path against the real Redis
(and, at the end, a worker subprocess on the real Kafka driven by the operator's commands):

- the shadow never publishes and never changes the serving results (the same batches with and
  without a shadow give identical records), and its online counters match a recount made here
  with the candidate's graph run by hand;
- the planted-winner experiment: a model trained on the clicks' own world, interleaved against
  one trained on another world, wins with 95 % confidence within ``PLANTED_EVENTS`` events;
  two copies of one model do not;
- ``attnrec models shadow VERSION`` reaches a running worker, interleaved records carry their
  teams and validate against the recs schema, and the online gate records its figures.
"""

from __future__ import annotations

import asyncio
import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from attnrec.stream.core.model import load_model
from attnrec.stream.stages.interleave import in_experiment
from attnrec.stream.stages.online import ONLINE_KEY, comparisons, totals

from attnrec import schemas
from attnrec.kafka_util import ensure_topics
from attnrec.redis_util import redis_sync
from attnrec.registry import Registry
from attnrec.settings import Settings
from tests.helpers import BatchRun, WorkerProc, build_small_registry, env_for, republish, settings_for

pytestmark = pytest.mark.integration

#: The planted-winner experiment must decide within this many click events (stated in docs/DEPLOY.md).
PLANTED_EVENTS = 6000


@pytest.fixture(autouse=True)
def _state_marker(stack: Any) -> None:
    """Redis holds attnrec's state (as a worker's start-up leaves it)."""
    redis_sync(Settings(redis_url=stack.redis_url)).set("attnrec:state", "test")


def _random_registry(root: Path, positions: str = "absolute") -> tuple[Path, str, str]:
    """Two random-weight models over the same items: serving (promoted) and candidate; window
    models (absolute positions) or incremental ones (relative)."""
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    versions = []
    for seed in (5, 6):
        ckpt = write_random_checkpoint(root / f"ckpt{seed}", n_items=122, max_len=8, d_model=16, n_blocks=2, n_heads=2,
                                       positions=positions, n_samples=16, seed=seed)
        versions.append(export_checkpoint(ckpt, root / "registry", promote=seed == 5, force=True))
    return root / "registry", versions[0], versions[1]


async def _wait_idle(run: BatchRun) -> None:
    for _ in range(3000):
        if run.stages["shadow"].shadow.idle:
            return
        await asyncio.sleep(0.01)  # the event loop reads the shadow process's answers
    raise AssertionError("the shadow never finished its batch")


def _by_hand(model: Any, window_newest_first: list[str], k: int = 10) -> list[str]:
    """The candidate's top-k for a window, the graph run directly (not through the worker's code)."""
    seen = [model.item_index[i.encode()] for i in window_newest_first]  # all of them: fewer than EXCLUDE_WINDOW
    width = model.history_len or model.max_len  # an incremental model's full graph reads its history
    idx = seen[:width]
    pad = [0] * (width - len(idx))
    items = np.array([pad + idx[::-1]], dtype=np.int64)
    # every event is a click, 1 s after the one before; the user's first event has no gap
    click = model.event_type_index[b"click"] if model.uses_types else 0
    step = int(np.searchsorted(model.gap_boundaries_ms, 1000, side="right")) + 1 if model.uses_gaps else 0
    gaps = [0 if j == len(seen) - 1 else step for j in range(len(idx))][::-1]
    feed = {"items": items, "types": np.array([pad + [click] * len(idx)], dtype=np.int64),
            "gaps": np.array([pad + gaps], dtype=np.int64), "exclude": np.array([sorted(set(seen))], dtype=np.int64)}
    top, scores = model.session.run(["top_items", "top_scores"], feed)
    return [model.item_ids[i] for i, sc in zip(top[0].tolist(), scores[0].tolist(), strict=True) if i > 1 and np.isfinite(sc)][:k]


@pytest.mark.parametrize("positions", ["absolute", "relative"])
async def test_shadow_never_publishes_never_changes_serving_and_its_counters_match_a_recount(stack: Any, tmp_path: Path,
                                                                                            positions: str) -> None:
    """With an incremental candidate (relative positions) the shadow process scores from its
    own caches and is sent only each user's new event: its lists must still be the full graph's."""
    reg, serving, cand = _random_registry(tmp_path, positions)
    tag = tmp_path.name
    plain = BatchRun(Settings(redis_url=stack.redis_url, registry=reg, home=tmp_path, policy_name=f"a{tag}"), reg)
    shadowed = BatchRun(Settings(redis_url=stack.redis_url, registry=reg, home=tmp_path, policy_name=f"b{tag}"), reg)
    candidate = load_model(Registry(reg).version_dir(cand))
    shadowed.stages["shadow"].set_candidate(candidate)
    items = plain.proc.model.item_ids[2:]
    rng = np.random.default_rng(11)
    n_users, rounds = 24, 12
    t0 = 1_764_300_000_000
    seq = [[items[int(j)] for j in rng.integers(0, len(items), size=rounds)] for _ in range(n_users)]
    windows: list[dict[int, list[str]]] = []  # per round: user -> window newest first, after the round
    out = {"a": [], "b": []}
    for r in range(rounds):
        for name, run in (("a", plain), ("b", shadowed)):
            evs = [{"event_id": f"{name}{tag}-{u}-{r}", "user_id": f"{name}{tag}-u{u}", "item_id": seq[u][r],
                    "event_type": "click", "ts": t0 + 1000 * r} for u in range(n_users)]
            out[name].append(await run.batch(evs))
            await _wait_idle(run)
        windows.append({u: seq[u][: r + 1][::-1] for u in range(n_users)})
    # never publishes, never changes the serving results
    for r in range(rounds):
        a, b = out["a"][r], out["b"][r]
        assert len(a) == len(b) == n_users, "one record per user and batch: the shadow published nothing"
        for ra, rb in zip(sorted(a, key=lambda x: x["user_id"]), sorted(b, key=lambda x: x["user_id"]), strict=True):
            assert rb["model_version"] == serving and "interleave" not in rb
            assert ra["items"] == rb["items"] and ra["because"] == rb["because"]
            assert not any("team" in it for it in rb["items"])
    # the counters against a recount: each round's lists scored on the next round's click
    await shadowed.flush()
    shown = {(int(rec["user_id"].rsplit("u", 1)[1]), r): [it["item_id"] for it in rec["items"]]
             for r in range(rounds) for rec in out["b"][r]}
    want = {"shadow": [0, 0, 0.0], "shadow-base": [0, 0, 0.0]}
    overlap = 0.0
    for r in range(rounds - 1):
        for u in range(n_users):
            nxt = seq[u][r + 1]
            mine = _by_hand(candidate, windows[r][u])
            overlap += len(set(mine) & set(shown[(u, r)])) / 10
            for src, lst in (("shadow", mine), ("shadow-base", shown[(u, r)])):
                want[src][0] += 1
                if nxt in lst:
                    want[src][1] += 1
                    want[src][2] += 1 / math.log2(lst.index(nxt) + 2)
    rows = {(x["source"], x["version"]): x for x in totals(redis_sync(shadowed.s).hgetall(ONLINE_KEY + f"b{tag}"))}
    for src, (n, hits, ndcg) in want.items():
        got = rows[(src, cand)]
        assert (got["events"], got["hits"]) == (n, hits), (src, got, want[src])
        assert got["ndcg@10"] * n == pytest.approx(ndcg, abs=1e-6)
    assert want["shadow"][1] != want["shadow-base"][1] or want["shadow"][2] != pytest.approx(want["shadow-base"][2])
    (c,) = comparisons(list(rows.values()))
    # the last round's lists wait for the next batch to join them (nothing scored them yet)
    assert c["lists"] == n_users * (rounds - 1) and len(shadowed.stages["shadow"].shadow.done) == 1
    assert c["overlap@10"] * c["lists"] == pytest.approx(overlap, abs=1e-6)
    assert plain.proc.metrics.shadow_batches.labels("scored")._value.get() == 0
    assert shadowed.proc.metrics.shadow_batches.labels("scored")._value.get() == rounds
    rows_by = {g: shadowed.proc.metrics.shadow_rows.labels(g)._value.get() for g in ("step", "full", "lost")}
    # (counted as the results are joined: the last round's is not yet)
    if positions == "relative":  # every user's first batch by the full graph, then one step per new event
        assert rows_by == {"step": n_users * (rounds - 2), "full": n_users, "lost": 0}
        assert shadowed.stages["shadow"].shadow.event_rows == n_users * (rounds - 1)  # sent the new event, not the window
    else:
        assert rows_by == {"step": 0, "full": n_users * (rounds - 1), "lost": 0}
        assert shadowed.stages["shadow"].shadow.event_rows == 0


def _world_registry(root: Path, seed: int) -> tuple[Registry, str]:
    root.mkdir(parents=True, exist_ok=True)
    path = build_small_registry(root, seed=seed, n_users=300, n_events=15_000,
                                train_args=("--epochs", "30", "--lr", "0.005", "--threads", "1"))
    reg = Registry(path)
    return reg, str(reg.current_version())


async def _interleave(stack: Any, tmp: Path, reg: Registry, serving: str, cand: str, name: str,
                      max_events: int) -> tuple[dict[str, Any], int]:
    """Stream the world-3 clicks through a worker interleaving ``cand`` with ``serving`` for
    every user; returns the comparison, and the events after which it first had a verdict (or 0)."""
    from attnrec.training.sim.synth import generate

    reg.promote(serving, reason="test", verify=False)
    s = Settings(redis_url=stack.redis_url, registry=reg.root, home=tmp, policy_name=name, interleave_fraction=1.0)
    run = BatchRun(s, reg.root)
    run.stages["shadow"].set_candidate(load_model(reg.version_dir(cand)))
    decided_at, batch = 0, []
    comp: dict[str, Any] = {}
    r = redis_sync(s)
    for n, ev in enumerate(generate(300, 300, max_events, seed=3), 1):
        d = orjson.loads(ev.to_json())
        d["event_id"], d["user_id"] = f"{name}-{d['event_id']}", f"{name}-{d['user_id']}"
        batch.append(d)
        if len(batch) == 50 or n == max_events:
            await run.batch(batch)
            batch = []
            comp = next((c for c in comparisons(totals(r.hgetall(ONLINE_KEY + name))) if c["version"] == cand), {})
            if not decided_at and comp.get("interleave", {}).get("verdict") not in (None, "undecided"):
                decided_at = n
    return comp, decided_at


async def test_a_planted_better_model_wins_the_interleaving_and_a_copy_does_not(stack: Any, tmp_path: Path) -> None:
    reg, good = _world_registry(tmp_path / "w3", 3)  # trained on the clicks' own world
    other, weak_src = _world_registry(tmp_path / "w99", 99)  # trained on another world
    weak = republish_into(reg, other, weak_src)
    comp, decided = await _interleave(stack, tmp_path / "a", reg, weak, good, f"win{tmp_path.name}", PLANTED_EVENTS)
    il = comp["interleave"]
    print(f"planted winner: {il} after {decided} events")
    assert il["verdict"] == "candidate", f"the better model did not win within {PLANTED_EVENTS} events: {il}"
    assert 0 < decided <= PLANTED_EVENTS
    copy = republish(reg, good)
    comp2, decided2 = await _interleave(stack, tmp_path / "b", reg, good, copy, f"same{tmp_path.name}", PLANTED_EVENTS)
    il2 = comp2["interleave"]
    print(f"two copies: {il2}")
    assert il2["verdict"] == "undecided" and decided2 == 0, f"a copy of the serving model 'won': {il2}"
    assert il2["impressions"] > 1000 and il2["serving_wins"] + il2["candidate_wins"] > 200


def republish_into(reg: Registry, src: Registry, version: str) -> str:
    """Publish ``src``'s ``version`` into ``reg`` (another registry): a version trained elsewhere."""
    from attnrec.manifest import load_items

    vdir = src.version_dir(version)
    manifest = {k: v for k, v in src.read_manifest(version).items() if k not in ("version", "created_at", "model_sha256")}
    step = vdir / "step.onnx"
    return str(reg.publish(vdir / "model.onnx", manifest, check=False, items=load_items(vdir, src.read_manifest(version)),
                           step_onnx_path=step if step.is_file() else None))


def _cli(s: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "attnrec.apps", "models", *args], env=env_for(s, s.home), capture_output=True,
                          text=True, timeout=60)


def test_the_operator_shadows_interleaves_and_gates_a_version_on_a_running_worker(stack: Any, names: dict[str, str],
                                                                                  tmp_path: Path) -> None:
    from tests.feeding import Feeder

    reg_path, serving, cand = _random_registry(tmp_path)
    s = settings_for(stack, names, reg_path, interleave_fraction=0.5, policy_name=f"op{tmp_path.name}", reload_poll_s=0.5)
    ensure_topics(s)
    w = WorkerProc(s, tmp_path / "home")
    try:
        w.wait_ready()
        res = _cli(s, "shadow", cand)
        assert res.returncode == 0 and cand in res.stdout, res.stderr
        time.sleep(2.0)  # the watcher polls the registry every RELOAD_POLL_S
        items = load_model(Registry(reg_path).version_dir(serving)).item_ids[2:]
        rng = np.random.default_rng(1)
        users = [f"op-u{k}" for k in range(40)]
        feeder = Feeder(s)
        from attnrec.events import ClickEvent

        evs = [ClickEvent(f"op-{r}-{u}", u, items[int(rng.integers(0, len(items)))], "click", 1_764_300_000_000 + r)
               for r in range(15) for u in users]
        feeder.send_all(evs[: len(users) * 5])
        time.sleep(1.0)
        feeder.send_all(evs[len(users) * 5 :])
        recs = _read_recs(s, len(evs) // 2)
        assert recs and all(r["model_version"] == serving for r in recs), "a shadow's version was published"
        validator = schemas.validator("recs")
        mixed = [r for r in recs if "interleave" in r]
        for r in recs:
            validator.validate(r)
            assert ("interleave" in r) == in_experiment(r["user_id"], 0.5) or r["fallback"]
        assert mixed and all(r["interleave"] == {"serving": serving, "candidate": cand} for r in mixed)
        assert all({it["team"] for it in r["items"]} <= {"serving", "candidate"} for r in mixed)
        metrics = w.get("/metrics")[1].decode()
        assert 'attnrec_shadow_batches_total{outcome="scored"}' in metrics
        assert f'attnrec_shadow_model{{version="{cand}"}} 1.0' in metrics
        time.sleep(1.5)  # the totals reach Redis once a second
        status = _cli(s, "shadow")
        assert status.returncode == 0 and f"{cand}:" in status.stdout and "interleaving:" in status.stdout, status.stdout
        gate = _cli(s, "promote", cand, "--online-margin", "0.5", "--online-min-events", "10")
        history = [h for h in Registry(reg_path).history() if h["decision"] in ("promoted", "rejected")][-1]
        assert history["version"] == cand and history["figures"]["online"]["events"] >= 10
        assert gate.returncode == (0 if history["decision"] == "promoted" else 1), gate.stdout + gate.stderr
        assert "online ndcg@10" in history["reason"]
        if history["decision"] == "promoted":  # promoting the shadowed version stops shadowing it
            assert Registry(reg_path).shadow_version() is None
            assert Registry(reg_path).history()[-1]["decision"] == "shadow-off"
        off = _cli(s, "shadow", "--off")
        assert off.returncode == 0 and Registry(reg_path).shadow_version() is None
    finally:
        if w.proc.poll() is None:
            w.terminate()


def _read_recs(s: Settings, at_least: int, timeout: float = 60.0) -> list[dict[str, Any]]:
    from attnrec.kafka_util import make_consumer

    c = make_consumer(s, s.recs_topic, group_id=None, auto_offset_reset="earliest")
    out: list[dict[str, Any]] = []
    deadline = last = time.monotonic() + timeout
    while time.monotonic() < deadline and len(out) < at_least and time.monotonic() - last < 3.0:  # 3 s quiet: all in
        for batch in c.poll(timeout_ms=200).values():
            out.extend(orjson.loads(m.value) for m in batch)
            last = time.monotonic()
    c.close()
    return out
