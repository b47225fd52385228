"""The pure parts of the served-path check (apps/served.py): how a log is cut into rounds for
the replay, and the verdict of the comparison. The check itself runs against Kafka, Redis and a
worker in tests/integration/test_replay_check.py."""

from __future__ import annotations

from typing import Any

from attnrec.apps.served import COVERAGE_SLACK, compare, rounds

from attnrec.events import ClickEvent


def ev(i: int, user: str) -> ClickEvent:
    return ClickEvent(f"e{i}", user, f"i{i}", "view", 1_000 + i)


def test_rounds_keep_the_log_order_and_never_hold_two_events_of_a_user() -> None:
    log = [ev(0, "a"), ev(1, "b"), ev(2, "a"), ev(3, "c"), ev(4, "b"), ev(5, "b"), ev(6, "d")]
    got = rounds(log)
    assert [e for r in got for e in r] == log, "every event once, in the log's order"
    assert [[e.user_id for e in r] for r in got] == [["a", "b"], ["a", "c", "b"], ["b", "d"]]
    assert rounds([]) == []


def figures(hr: float, ndcg: float) -> dict[str, list[float]]:
    return {"hr@10": [hr, hr - 0.01, hr + 0.01], "ndcg@10": [ndcg, ndcg - 0.01, ndcg + 0.01]}


OFFLINE = {"attention": figures(0.30, 0.20), "trending": figures(0.04, 0.02), "static": figures(0.03, 0.015)}


def online(events: int, model_hr: float = 0.30) -> dict[str, dict[str, float]]:
    return {"model": {"events": events, "hr@10": model_hr, "ndcg@10": 0.20},
            "trending": {"events": events, "hr@10": 0.04, "ndcg@10": 0.02},
            "static": {"events": events, "hr@10": 0.03, "ndcg@10": 0.015}}


def test_the_verdict_needs_every_source_within_the_tolerance_on_the_same_events() -> None:
    ok = compare(online(1000, 0.305), OFFLINE, 1000, tolerance=0.01)
    assert ok["within"] and ok["sources"]["model"]["hr@10"]["difference"] == 0.005
    assert not compare(online(1000, 0.32), OFFLINE, 1000, tolerance=0.01)["within"], "a figure 0.02 off"
    short = int(1000 * (1 - COVERAGE_SLACK)) - 1
    assert not compare(online(short), OFFLINE, 1000, tolerance=0.01)["within"], "pairs the worker did not score"
    assert compare(online(1001), OFFLINE, 1000, tolerance=0.01)["within"], "a next event counted twice (a redone batch)"
    assert not compare(online(1011), OFFLINE, 1000, tolerance=0.01)["within"], "more scored online than the slack"
    missing = online(1000)
    del missing["static"]
    assert compare(missing, OFFLINE, 1000, tolerance=0.01)["sources"]["static"] == {"missing": "online"}
    assert not compare(online(0), OFFLINE, 0, tolerance=0.01)["within"], "nothing compared is no agreement"


def test_a_deadline_does_not_count_a_pause(monkeypatch: Any) -> None:
    from attnrec.apps import served

    now = [100.0]
    monkeypatch.setattr(served.time, "monotonic", lambda: now[0])
    d = served.Deadline(10.0)
    for step in (3.0, 3.0, 600.0, 3.0):  # a 10-minute SIGSTOP between two looks
        now[0] += step
        assert not d.passed()
    now[0] += 1.5
    assert d.passed(), "10 s of running time"
