"""The prequential evaluation's pure parts: session kNN (training/sknn.py), the pairs, trending
now replayed as the worker keeps it, the methods on the same pairs, the figures and their
intervals (training/prequential*.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from attnrec.training.prequential import POLICIES, Stream, Trending, pairs_of, prequential
from attnrec.training.prequential_report import markdown_table, pair_values, per_period, summarise
from attnrec.training.sknn import VMIS, VSKNN, KnnConfig, SessionKNN

from attnrec.events import ClickEvent

T0 = 1_396_310_400_000  # 2014-04-01T00:00Z


def ev(k: int, user: str, item: str, t_s: float, etype: str = "click") -> ClickEvent:
    return ClickEvent(f"e{k}", user, item, etype, T0 + int(t_s * 1000))


# ------------------------------------------------------------------------------------ kNN
def test_vsknn_by_hand() -> None:
    knn = SessionKNN(VSKNN).fit([("A", ["a", "b"], 10), ("B", ["b", "c"], 20), ("C", ["c", "d"], 30)])
    # session [a, b]: weights a 1/2, b 1; A shares both -> (0.5 + 1) / 2, B shares b -> 1 / 2; C nothing
    assert knn.neighbours(["a", "b"]) == [("A", 0.75), ("B", 0.5)]
    # both neighbours hold b, the newest item (step 1): votes = similarity
    assert knn.scores(["a", "b"]) == pytest.approx({"a": 0.75, "b": 1.25, "c": 0.5})
    # the session itself is never its own neighbour
    assert [k for k, _ in knn.neighbours(["a", "b"], exclude_key="A")] == ["B"]
    # a neighbour that shares only an older item votes less: [b, x]: x unknown, b at step 2
    assert knn.scores(["b", "x"]) == pytest.approx({"a": 0.25 / 2, "b": 0.25 / 2 * 2, "c": 0.25 / 2})


def test_vsknn_samples_the_most_recent_sessions_and_idf() -> None:
    sessions = [(f"s{i}", ["a", f"x{i}"], i) for i in range(10)]
    knn = SessionKNN(KnnConfig("v", k=100, sample=3)).fit(sessions)
    assert sorted(k for k, _ in knn.neighbours(["a"])) == ["s7", "s8", "s9"]
    idf = SessionKNN(KnnConfig("v", idf_weight=1.0)).fit([("A", ["a", "b"], 1), ("B", ["a"], 2)])
    got = idf.scores(["a"])  # both similar 1; b is rarer: weight 1 + log(2)
    assert got["a"] == pytest.approx(2.0) and got["b"] == pytest.approx(1 + math.log(2))


def test_vmis_knn_by_hand() -> None:
    knn = SessionKNN(VMIS).fit([("A", ["a", "b"], 10), ("B", ["b", "c"], 20), ("C", ["a", "c"], 30)])
    # session [a, b]: A 0.5 + 1, B 1, C 0.5 (no normalisation); ties break by recency
    assert knn.neighbours(["a", "b"]) == [("A", 1.5), ("B", 1.0), ("C", 0.5)]
    s = knn.scores(["a", "b"])
    idf = {i: math.log(3 / 2) for i in "abc"}
    # A and B hold b (step 1: 0.9), C holds only a (step 2: 0.8)
    assert s["c"] == pytest.approx(1.0 * 0.9 * idf["c"] + 0.5 * 0.8 * idf["c"])
    assert s["a"] == pytest.approx(1.5 * 0.9 * idf["a"] + 0.5 * 0.8 * idf["a"])


# ------------------------------------------------------------------------------------ pairs
def test_pairs_are_next_positive_events_after_start() -> None:
    evs = [ev(0, "u", "a", 0), ev(1, "u", "b", 100), ev(2, "u", "c", 200, "impression"), ev(3, "u", "d", 300),
           ev(4, "v", "a", 150), ev(5, "w", "z", 250)]
    st = Stream.of(evs)
    p = pairs_of(st, T0 + 100_000)
    # u: (b -> c) is no choice; (c -> d): the list after the impression is the one scored; v, w: one event
    got = [(st.events[a].event_id, st.events[b].event_id) for a, b in zip(p.prev, p.next, strict=True)]
    assert got == [("e2", "e3")]
    p = pairs_of(st, T0)
    assert [(st.events[a].event_id, st.events[b].event_id) for a, b in zip(p.prev, p.next, strict=True)] == \
        [("e0", "e1"), ("e2", "e3")]


# ------------------------------------------------------------------------------------ trending
def test_trending_replays_the_workers_buckets_and_re_reads() -> None:
    # window 30 min: buckets of 60 s; weights as the worker's; re-read when a new bucket starts
    evs = [ev(0, "u", "a", 0, "view"), ev(1, "u", "b", 10, "purchase"), ev(2, "v", "a", 20, "view"),
           ev(3, "v", "c", 70, "view"), ev(4, "w", "a", 80, "impression"), ev(5, "w", "d", 1900, "view")]
    st = Stream.of(evs)
    tr = Trending(st, 1_800_000)
    assert tr.at(0) == []  # nothing counted before the first event
    assert tr.at(2) == [0]  # counted: a (re-read when it opened the bucket), b after it: not yet read
    assert tr.at(4) == [1, 0, 2]  # re-read at c's new bucket: b 3, a 2, c 1
    assert tr.at(5) == [1, 0, 2]  # the impression weighs nothing
    # d at 1900 s opens bucket 31: the window is buckets 2..31, so a, b (bucket 0) and c (1) left it
    tr3 = Trending(Stream.of([*evs, ev(6, "x", "e", 1901, "view")]), 1_800_000)
    assert tr3.at(6) == [3]
    with pytest.raises(ValueError, match="forwards only"):
        tr3.at(2)


def test_equal_trending_scores_order_as_redis_does() -> None:
    evs = [ev(i, "u", it, i, "view") for i, it in enumerate(["b", "a", "c"])] + [ev(8, "u", "x", 61), ev(9, "u", "y", 62)]
    st = Stream.of(evs)
    tr = Trending(st, 1_800_000)
    assert [st.items[i] for i in tr.at(4)] == ["x", "c", "b", "a"]  # ZREVRANGE: equal scores, member descending


# ------------------------------------------------------------------------------------ the loop
def _world(n_sessions: int = 300, seed: int = 1) -> list[ClickEvent]:
    """Sessions that walk a chain a -> b -> c ... of 40 items, one click a minute, a session every
    5 minutes: the next item is always the chain's next (never a repeat)."""
    rng = np.random.default_rng(seed)
    out, k = [], 0
    for s in range(n_sessions):
        start = int(rng.integers(0, 40))
        for j in range(int(rng.integers(2, 6))):
            out.append(ev(k, f"s{s}", f"i{(start + j) % 40}", s * 300 + j * 60))
            k += 1
    return out


def test_every_method_scored_on_the_same_pairs_and_knn_learns_the_chain() -> None:
    evs = _world()
    res = prequential(evs, T0 + 150 * 300_000, 50 * 300_000, ["popular", "trending", "vsknn", "vmis"])
    assert len(res.pairs) > 100 and set(res.ranks) == {"popular", "trending", "vsknn", "vmis"}
    for m in res.ranks:
        assert set(res.ranks[m]) == set(POLICIES) and all(len(r) == len(res.pairs) for r in res.ranks[m].values())
    hr = {m: float((res.ranks[m]["excluded"] < 10).mean()) for m in res.ranks}
    assert hr["vsknn"] > 0.95 and hr["vmis"] > 0.95, hr  # the chain's next item is what neighbours did next
    assert hr["popular"] < 0.5, hr
    assert [p["history_events"] for p in res.periods][0] == sum(e.ts < T0 + 150 * 300_000 for e in evs)


def test_excluding_seen_items_costs_the_repeats() -> None:
    evs = []
    for s in range(200):  # every session clicks x, then y, then x again
        evs += [ev(3 * s, f"s{s}", "x", s * 100), ev(3 * s + 1, f"s{s}", "y", s * 100 + 10),
                ev(3 * s + 2, f"s{s}", "x", s * 100 + 20)]
    res = prequential(evs, T0 + 100 * 100_000, 10**9, ["popular"])
    r = res.ranks["popular"]
    target_x = np.array([res.stream.items[i] == "x" for i in res.pairs.target])
    assert (r["excluded"][target_x] == res.n).all()  # x was seen: never shown
    assert (r["allowed"][target_x] < 2).all()


# ------------------------------------------------------------------------------------ report
def test_metrics_intervals_and_paired_differences() -> None:
    ranks = np.array([0, 1, 9, 10, 19, 20, 0, 3])
    v = pair_values(ranks)
    assert v["hr@10"].tolist() == [1, 1, 1, 0, 0, 0, 1, 1]
    assert v["ndcg@10"][1] == pytest.approx(1 / math.log2(3)) and v["mrr@20"][4] == pytest.approx(1 / 20)
    assert v["mrr@20"][5] == 0.0
    users = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    out = summarise({"a": ranks, "b": ranks, "c": np.full(8, 20)}, users, reference="a", resamples=200, seed=3)
    hr = out["methods"]["a"]["hr@10"]
    assert hr[0] == 0.625 and hr[1] <= hr[0] <= hr[2]
    assert out["methods"]["b"]["minus_a"]["hr@10"] == [0.0, 0.0, 0.0, "noise"]
    assert out["methods"]["c"]["minus_a"]["hr@10"][0] == -0.625 and out["methods"]["c"]["minus_a"]["hr@10"][3] == "significant"
    again = summarise({"a": ranks}, users, resamples=200, seed=3)
    assert again["methods"]["a"] == {k: out["methods"]["a"][k] for k in ("hr@10", "ndcg@10", "mrr@20")}  # seeded
    table = markdown_table(out, "a")
    assert "| c | 0.0000 (0.0000–0.0000)" in table and "noise" in table
    pp = per_period({"a": ranks}, ["d1"] * 4 + ["d2"] * 4)
    assert pp["d1"]["pairs"] == 4 and pp["d1"]["a"]["hr@10"] == 0.75


# ------------------------------------------------------------------------------------ the command
def test_times_and_bad_options_are_one_line_errors() -> None:
    from attnrec.training.prequential_cli import PrequentialSettings, parse_when, run

    from attnrec.errors import ConfigError

    assert parse_when("2014-04-05", 0) == T0 + 4 * 86_400_000  # ISO 8601 without an offset: UTC
    assert parse_when("2014-04-05T02:00+02:00", 0) == T0 + 4 * 86_400_000
    assert parse_when("4d", T0) == T0 + 4 * 86_400_000  # a duration after the log's first event
    with pytest.raises(ConfigError, match="expected an ISO 8601 time"):
        parse_when("yesterday", T0)
    evs = _world(20)
    with pytest.raises(ConfigError, match="unknown sknn"):
        run(PrequentialSettings(preq_start="1h", preq_methods="popular,sknn"), evs)
    with pytest.raises(ConfigError, match="--start is required"):
        run(PrequentialSettings(preq_methods="popular"), evs)


def test_the_run_reports_validation_and_test_apart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from attnrec.training.prequential_cli import PrequentialSettings, run

    evs = _world()
    s = PrequentialSettings(preq_start="2014-04-01T12:30", preq_every="4h", preq_test_from="2014-04-01T20:00", preq_methods="popular,vmis",
                            preq_reference="vmis", preq_resamples=50, preq_json=tmp_path / "out.json")
    out = run(s, evs)
    fig = out["figures"]["excluded"]
    assert fig["validation"]["pairs"] + fig["test"]["pairs"] == out["pairs"] > 0
    assert fig["test"]["methods"]["popular"]["minus_vmis"]["hr@10"][0] < 0
    assert (tmp_path / "out.json").exists() and out["cpu_seconds"] >= 0
