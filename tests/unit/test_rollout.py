"""Model roll-out logic without services: team-draft interleaving and its credit, the win-rate
interval, the online evaluation's pairing of shadow lists, the comparisons the dashboard and
``attnrec models shadow`` show, the online promotion gate, the registry's SHADOW pointer."""

from __future__ import annotations

import math
import os
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from attnrec.exporter.gate import online_decision, promote_gated
from attnrec.stream.stages.candidate import overlap
from attnrec.stream.stages.interleave import credit, in_experiment, team_draft, win_rate
from attnrec.stream.stages.online import OnlineEval, comparisons, totals
from attnrec.stream.stages.shadow import Shadow

from attnrec import schemas
from attnrec.registry import Registry


def test_team_draft_takes_each_teams_best_untaken_item_in_turn() -> None:
    a, b = ["x", "y", "z", "w"], ["y", "q", "x", "r"]
    merged = team_draft(a, b, 4, seed="e1")
    items = [i for i, _ in merged]
    assert len(items) == len(set(items)) == 4
    # each round: both teams pick once, in a coin-flipped order
    for r in range(2):
        assert {t for _, t in merged[2 * r : 2 * r + 2]} == {"serving", "candidate"}
    # every pick is that team's highest-ranked item not taken before it
    taken: set[str] = set()
    for item, team in merged:
        own = a if team == "serving" else b
        assert item == next(i for i in own if i not in taken)
        taken.add(item)
    assert team_draft(a, b, 4, seed="e1") == merged  # the trigger's id decides the coins


def test_team_draft_hand_made_case() -> None:
    # seed chosen so that the first coin gives the candidate the first pick
    seed = next(f"s{i}" for i in range(100) if team_draft(["a"], ["b"], 1, seed=f"s{i}")[0][1] == "candidate")
    merged = team_draft(["a", "b", "c"], ["b", "d", "a"], 2, seed=seed)
    assert merged == [("b", "candidate"), ("a", "serving")]


def test_team_draft_when_one_list_runs_out_and_identical_lists() -> None:
    merged = team_draft(["a"], ["b", "c", "d"], 4, seed="x")
    assert sorted(i for i, _ in merged) == ["a", "b", "c", "d"]
    assert [t for i, t in merged if i in "bcd"] == ["candidate"] * 3
    same = team_draft(list("abcdefghij"), list("abcdefghij"), 10, seed="y")
    assert [i for i, _ in same] == list("abcdefghij")  # identical lists: the same list, teams by coin
    teams = Counter(t for _, t in same)
    assert teams["serving"] == teams["candidate"] == 5


def test_credit_goes_to_the_team_that_contributed_the_clicked_item() -> None:
    merged = [("a", "serving"), ("b", "candidate"), ("c", "candidate")]
    assert credit(merged, "b") == "candidate"
    assert credit(merged, "a") == "serving"
    assert credit(merged, "zz") is None


def test_team_draft_is_fair_between_identical_rankers() -> None:
    # the same model on both sides: over many users, a click on the list is credited to each team
    # about half the time
    rng = np.random.default_rng(0)
    wins = Counter()
    for u in range(4000):
        lst = [f"i{j}" for j in rng.permutation(30)[:10]]
        merged = team_draft(lst, lst, 10, seed=f"ev{u}")
        clicked = lst[int(rng.integers(0, 10))]
        wins[credit(merged, clicked)] += 1
    assert abs(wins["candidate"] / 4000 - 0.5) < 0.03
    assert win_rate(wins["serving"], wins["candidate"]).verdict == "undecided"


def test_win_rate_interval() -> None:
    w = win_rate(20, 80)
    # n = 100: half-width sqrt(35 * ln(35 / (10 * 0.05**2))) / 100
    assert w.rate == pytest.approx(0.8) and w.high - w.rate == pytest.approx(math.sqrt(35 * math.log(1400)) / 100)
    assert w.verdict == "candidate"
    assert win_rate(40, 60).verdict == "undecided"  # a fixed-n (Wilson) interval would call this
    assert win_rate(70, 30).verdict == "serving"
    assert win_rate(0, 0).rate is None and win_rate(0, 0).verdict == "undecided"


def test_watching_two_copies_of_one_model_rarely_declares_a_winner() -> None:
    # the operator looks after every preference, for up to 2,000 preferences: the always-valid
    # interval keeps the chance of ever declaring a winner between equals below 5 %
    rng = np.random.default_rng(7)
    runs, false = 400, 0
    for _ in range(runs):
        wins = rng.integers(0, 2, size=2000)
        c = np.cumsum(wins)
        for n in range(10, 2001, 10):
            if win_rate(int(n - c[n - 1]), int(c[n - 1])).verdict != "undecided":
                false += 1
                break
    assert false / runs < 0.05, false / runs


def test_in_experiment_is_a_stable_fraction_of_users() -> None:
    users = [f"user-{i}" for i in range(20000)]
    share = sum(in_experiment(u, 0.25) for u in users) / len(users)
    assert abs(share - 0.25) < 0.015
    assert [in_experiment(u, 0.25) for u in users[:50]] == [in_experiment(u, 0.25) for u in users[:50]]
    assert not any(in_experiment(u, 0.0) for u in users[:100]) and all(in_experiment(u, 1.0) for u in users[:100])


def test_shadow_lists_join_only_the_recommendation_they_shadow() -> None:
    ev = OnlineEval()
    ev.remember("u", {"model": ("v1", ["a", "b"])}, tag="t1")
    assert ev.add("u", "t1", {"shadow": ("v2", ["b", "c"]), "shadow-base": ("v2", ["a", "b"])})
    assert not ev.add("u", "t0", {"shadow": ("v2", ["zz"])})  # an older trigger's list
    assert not ev.add("nobody", "t1", {"shadow": ("v2", ["a"])})
    scores = {(s.source, s.version): s for s in ev.observe("u", "c", "click")}
    assert scores[("shadow", "v2")].hit and scores[("shadow", "v2")].ndcg == pytest.approx(1 / np.log2(3))
    assert not scores[("shadow-base", "v2")].hit and not scores[("model", "v1")].hit
    assert not ev.add("u", "t1", {"shadow": ("v2", ["c"])})  # scored already: too late


def test_comparisons_from_the_redis_totals() -> None:
    f = {b"shadow|v2|n": b"200", b"shadow|v2|hits": b"80", b"shadow|v2|ndcg": b"40.0",
         b"shadow-base|v2|n": b"200", b"shadow-base|v2|hits": b"50", b"shadow-base|v2|ndcg": b"20.0",
         b"shadow|v2|lists": b"250", b"shadow|v2|overlap": b"125.0",
         b"team-serving|v2|n": b"100", b"team-serving|v2|hits": b"20",
         b"team-candidate|v2|n": b"100", b"team-candidate|v2|hits": b"40",
         b"model|v1|n": b"300", b"model|v1|hits": b"90", b"model|v1|ndcg": b"45.0"}
    (c,) = comparisons(totals(f))
    assert c["version"] == "v2" and c["events"] == 200
    assert c["shadow_ndcg@10"] == pytest.approx(0.2) and c["serving_ndcg@10"] == pytest.approx(0.1)
    assert c["shadow_hr@10"] == pytest.approx(0.4) and c["overlap@10"] == pytest.approx(0.5)
    il = c["interleave"]
    assert (il["serving_wins"], il["candidate_wins"], il["impressions"]) == (20, 40, 100)
    assert il["win_rate"] == pytest.approx(40 / 60) and il["verdict"] == "undecided"  # 60 preferences: not yet


def test_online_gate() -> None:
    good = {"events": 2000, "shadow_ndcg@10": 0.21, "serving_ndcg@10": 0.20}
    assert online_decision(good, 0.02, 1000)[0]
    assert not online_decision(good, 0.10, 1000)[0]
    assert not online_decision({**good, "events": 999}, 0.0, 1000)[0]
    ok, why = online_decision(None, 0.0, 10)
    assert not ok and "shadow" in why


@pytest.fixture(scope="module")
def registry_versions(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with two published versions of a random-weight model, validation NDCG@10 0.10 and 0.11."""
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    from tests.unit.test_exporter_registry import republish

    base = tmp_path_factory.mktemp("rollout")
    ckpt = write_random_checkpoint(base / "ckpt", n_items=60, max_len=8, d_model=8)
    v0 = export_checkpoint(ckpt, base / "registry")
    reg = Registry(base / "registry")
    return base / "registry", republish(reg, v0, metrics={"ndcg@10": 0.10}), republish(reg, v0, metrics={"ndcg@10": 0.11})


def test_shadow_pointer_and_online_promotion_go_to_the_history(registry_versions: tuple[Path, str, str],
                                                                tmp_path: Path) -> None:
    import shutil

    root, v1, v2 = registry_versions
    shutil.copytree(root, tmp_path / "reg")
    reg = Registry(tmp_path / "reg")
    reg.promote(v1, reason="first")
    assert reg.shadow_version() is None
    reg.set_shadow(v2)
    assert reg.shadow_version() == v2
    online = {"events": 5000, "shadow_ndcg@10": 0.19, "serving_ndcg@10": 0.20}
    entry = promote_gated(reg, v2, online=online, online_margin=0.0, online_min_events=1000)
    assert entry["decision"] == "rejected" and "online ndcg@10 0.19000 < 0.20000" in entry["reason"]
    assert entry["figures"]["online"]["events"] == 5000 and reg.current_version() == v1
    entry = promote_gated(reg, v2, online={**online, "shadow_ndcg@10": 0.21}, online_margin=0.02, online_min_events=1000)
    assert entry["decision"] == "promoted" and reg.current_version() == v2
    reg.set_shadow(None)
    assert reg.shadow_version() is None
    assert [h["decision"] for h in reg.history()][-4:] == ["shadow", "rejected", "promoted", "shadow-off"]
    assert reg.set_shadow(None) is None  # nothing to stop: nothing recorded
    assert all(schemas.validate("model-updates", h) == [] for h in reg.history())  # what a notifier would send


async def test_shadow_samples_its_fraction_and_queues_at_most_max_pending(registry_versions: tuple[Path, str, str]) -> None:
    import asyncio

    from attnrec.stream.core.entries import format_entry
    from attnrec.stream.core.model import load_model

    root, v1, _ = registry_versions
    m = load_model(Registry(root).version_dir(v1))
    window = [format_entry(1_764_300_000_000 + i, "click", m.item_ids[2 + i]).encode() for i in range(5)][::-1]
    from attnrec.stream.stages.interleave import unit_hash

    users = [f"u{i}" for i in range(40)]
    sampled = [u for u in users if unit_hash("shadow|" + u) < 0.5]
    assert 10 < len(sampled) < 30
    rows = {u: (f"t-{u}", window, ["a"], 5, 1) for u in users}
    s = Shadow(0.5, k=10, exclude_seen=True, exclude_window=50, max_pending=1)
    assert s.submit(rows, frozenset()) == "off"  # no candidate
    s.set_model(m)
    try:
        other = {u: rows[u] for u in users if u not in sampled}
        assert s.submit(other, frozenset()) == "fraction"  # no sampled user in the batch
        # the process is still starting: the first batch waits in the queue, the next finds it full
        assert [s.submit(rows, frozenset()) for _ in range(3)] == ["scored", "busy", "busy"]
        deadline = time.monotonic() + 60
        while not s.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.05)  # the event loop reads the process's answers
        (res,) = s.drain()
        assert res.version == v1 and set(res.lists) == set(sampled) and res.ms > 0  # the sampled users only
        for u, (tag, cand, serving) in res.lists.items():
            assert tag == rows[u][0] and serving == ["a"] and len(cand) == 10
            assert not set(cand) & {e.decode().split("|")[2] for e in window}, "a seen item was shadow-recommended"
        assert s._proc.pid != os.getpid() and s._proc.is_alive()  # scored in another process
        if hasattr(os, "SCHED_IDLE"):  # Linux: every thread of it on idle CPU only, the imports' threads too
            tids = [int(t) for t in os.listdir(f"/proc/{s._proc.pid}/task")]
            assert len(tids) > 1 and all(os.sched_getscheduler(t) == os.SCHED_IDLE for t in tids)
    finally:
        s.close()


def test_overlap() -> None:
    assert overlap(list("abcdefghij"), list("abcdeKLMNO")) == 0.5
    assert overlap([], list("abc")) == 0.0


def test_an_incremental_candidate_is_shadow_scored_from_its_own_caches_like_from_its_full_graph(tmp_path: Path) -> None:
    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint
    from attnrec.stream.core.cache import KVCache
    from attnrec.stream.core.entries import format_entry
    from attnrec.stream.core.model import load_model
    from attnrec.stream.stages.candidate import candidate_lists, incremental_lists

    ckpt = write_random_checkpoint(tmp_path / "ckpt", n_items=80, max_len=6, d_model=16, n_blocks=2, n_heads=2,
                                   positions="relative", n_samples=16, seed=9)
    reg = Registry(tmp_path / "reg")
    m = load_model(reg.version_dir(export_checkpoint(ckpt, reg.root)))
    assert m.incremental
    cache = KVCache(2**24)
    rng = np.random.default_rng(4)
    items = m.item_ids[2:]
    hist: dict[str, list[bytes]] = {f"u{i}": [] for i in range(12)}
    opts = {"k": 10, "exclude_seen": True, "exclude_window": 8}
    steps = 0
    for rnd in range(15):
        users = [u for u in hist if rng.random() < 0.7]  # some users skip a batch, some get two events
        new = {u: 1 + int(rng.random() < 0.2) for u in users}
        for u in users:
            for j in range(new[u]):
                hist[u].insert(0, format_entry(1_764_300_000_000 + 1000 * (2 * rnd + j), "click",
                                               items[int(rng.integers(0, len(items)))]).encode())
        windows = {u: hist[u][:20] for u in users}
        steps += sum(1 for u in users if (c := cache.peek(u)) is not None and new[u] == 1 and c.seq == len(hist[u]) - 1)
        inc = incremental_lists(m, cache, {u: (windows[u], len(hist[u]), new[u]) for u in users}, **opts)
        full = candidate_lists(m, windows, users, **opts)
        assert inc.keys() == full.keys()
        for u in users:
            assert [i for i, _ in inc[u]] == [i for i, _ in full[u]], (rnd, u)
            assert [s for _, s in inc[u]] == pytest.approx([s for _, s in full[u]], abs=2e-3)
    assert steps > 40, "the step graph scored too few rows to be tested"


async def test_a_user_sent_only_its_new_event_without_a_cache_is_reported_lost_and_sent_whole_next(tmp_path: Path) -> None:
    import asyncio

    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint
    from attnrec.stream.core.entries import format_entry
    from attnrec.stream.core.model import load_model

    ckpt = write_random_checkpoint(tmp_path / "ckpt", n_items=40, max_len=6, d_model=16, n_blocks=1, n_heads=2,
                                   positions="relative", n_samples=8, seed=3)
    reg = Registry(tmp_path / "reg")
    m = load_model(reg.version_dir(export_checkpoint(ckpt, reg.root)))
    hist = [format_entry(1_764_300_000_000 + 1000 * i, "click", m.item_ids[2 + i]).encode() for i in range(4)][::-1]
    s = Shadow(1.0, k=5, exclude_seen=True, exclude_window=8)

    async def answer() -> dict[str, int]:
        deadline = time.monotonic() + 60
        while not s.idle and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        (res,) = s.drain()
        return res.rows

    s.set_model(m)
    try:
        s._sent["ghost"] = 3  # the worker believes the process's cache of "ghost" is at #seq 3: it is not
        assert s.submit({"a": ("t1", hist, [], 4, 4), "ghost": ("t2", hist, [], 4, 1)}, frozenset()) == "scored"
        assert s.event_rows == 1  # "ghost" went as its new event only
        assert await answer() == {"step": 0, "full": 1, "lost": 1}
        assert "ghost" not in s._sent and s._sent["a"] == 4
        nxt = [format_entry(1_764_300_009_000, "click", m.item_ids[9]).encode(), *hist]
        assert s.submit({"a": ("t3", nxt, [], 5, 1), "ghost": ("t4", nxt, [], 5, 1)}, frozenset()) == "scored"
        assert s.event_rows == 2  # "a" as its event (its cache is in step), "ghost" whole again
        assert await answer() == {"step": 1, "full": 1, "lost": 0}
    finally:
        s.close()
