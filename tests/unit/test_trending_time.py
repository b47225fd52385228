"""Trending now follows the stream's time: an event stamped ahead of the wall clock does not move
the clock, and entering a new bucket of stream time asks for a re-read at once (a replay runs
through a day of event time in minutes)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import redis.asyncio as aioredis
from attnrec.stream.stages.trending import Counts, TrendingStage

from attnrec.events import ClickEvent


def test_an_event_from_the_future_does_not_move_the_clock() -> None:
    c = Counts(bucket_ms=60_000)
    c.add([ClickEvent("1", "u", "a", "view", 1_396_314_141_719)])
    c.add([ClickEvent("2", "u", "b", "view", int(time.time() * 1000) + 86_400_000 * 365)])  # a year ahead: skew
    assert c.newest_ts == 1_396_314_141_719
    assert sum(len(v) for v in c.by_key.values()) == 2  # both counted, in their own buckets


def test_a_new_bucket_of_stream_time_asks_for_a_re_read() -> None:
    st = TrendingStage(aioredis.Redis(), window_s=1800)  # buckets of 60 s; no connection is made here
    t = 1_396_314_000_000
    st.observe(SimpleNamespace(events=[ClickEvent("1", "u", "a", "view", t)]))
    assert st._due.is_set()  # nothing read yet
    st._due.clear()
    st._bucket = t // 60_000  # as a flush leaves it
    st.observe(SimpleNamespace(events=[ClickEvent("2", "u", "a", "view", t + 30_000)]))
    assert not st._due.is_set()  # the same bucket: the once-a-second re-read is enough
    st.observe(SimpleNamespace(events=[ClickEvent("3", "u", "a", "view", t + 61_000)]))
    assert st._due.is_set()
