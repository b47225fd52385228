"""The worker's pure logic (``stream/core/``: records, entries, inputs, recommend) without Kafka, Redis or onnxruntime.

A :class:`LoadedModel` is a plain dataclass: the tests build one by hand with a tiny
vocabulary and no session (``build_inputs`` and ``recommend`` never touch the session), and
feed ``recommend`` hand-written model outputs.
"""

from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest
from attnrec.stream.core.buffer import user_keys
from attnrec.stream.core.entries import BufferEntry, decode_entry, encode_entry
from attnrec.stream.core.inputs import build_inputs
from attnrec.stream.core.model import LoadedModel
from attnrec.stream.core.recommend import recommend
from attnrec.stream.core.records import RawRecord, dlq_reason, parse_records

from attnrec.events import MAX_MESSAGE_BYTES, ClickEvent
from attnrec.manifest import OOV, PAD, gap_boundaries_ms

NOW = 1_764_300_000_000


def make_model(items: list[str], *, max_len: int = 4, uses_types: bool = True, uses_gaps: bool = True,
               popularity: list[str] | None = None) -> LoadedModel:  # fmt: skip
    item_ids = ["<pad>", "<oov>"] + items
    types = ["other", "view", "click", "like", "cart", "purchase", "gift", "share"]
    return LoadedModel(
        version="v-test",
        manifest={},
        session=None,  # type: ignore[arg-type]
        item_ids=item_ids,
        item_index={it.encode(): i for i, it in enumerate(item_ids) if i >= 2},
        event_type_index={t.encode(): i + 1 for i, t in enumerate(types)},
        gap_boundaries_ms=np.asarray(gap_boundaries_ms(), dtype=np.int64),
        max_len=max_len,
        top_k=10,
        uses_types=uses_types,
        uses_gaps=uses_gaps,
        popularity=popularity if popularity is not None else list(items),
    )


def rec(value: bytes | None, offset: int = 0, key: bytes | None = b"u1", partition: int = 3) -> RawRecord:
    return RawRecord("clicks", partition, offset, key, value)


def ev_json(**kw: object) -> bytes:
    d: dict[str, object] = {"event_id": "e1", "user_id": "u1", "item_id": "a", "event_type": "click", "ts": NOW}
    d.update(kw)
    return orjson.dumps({k: v for k, v in d.items() if v is not None})


def entries(*spec: tuple[str, str, int]) -> list[bytes]:
    """Raw buffer entries newest first, as Redis returns them."""
    return [encode_entry(ClickEvent("e", "u", item, et, ts)).encode() for item, et, ts in spec]


def ix(m: LoadedModel, item: str) -> int:
    return m.item_index[item.encode()]


def bucket(gap_ms: int) -> int:
    return int(np.searchsorted(np.asarray(gap_boundaries_ms()), gap_ms, side="right")) + 1


# ----------------------------------------------------------------------------- parse_records
def test_parse_records_keeps_order_and_watermark_field() -> None:
    recs = [rec(ev_json(event_id=f"e{i}", item_id=f"i{i}"), offset=10 + i) for i in range(3)]
    p = parse_records(recs, now_ms=NOW)
    assert not p.dead
    assert [(e.event_id, f, o) for e, f, o in p.events] == [
        ("e0", "clicks:3", 10),
        ("e1", "clicks:3", 11),
        ("e2", "clicks:3", 12),
    ]


@pytest.mark.parametrize(
    "value, error, reason",
    [
        (b"{not json", "not JSON", "not_json"),
        (None, "empty message", "empty"),
        (b"[1, 2]", "expected a JSON object", "invalid_field"),
        (ev_json(ts=None), "missing field 'ts'", "missing_field"),
        (ev_json(item_id=None), "missing field 'item_id'", "missing_field"),
        (ev_json(user_id=""), "field 'user_id' is empty", "invalid_field"),
        (ev_json(user_id=7), "field 'user_id' must be a string", "invalid_field"),
        (ev_json(item_id="x" * 257), "field 'item_id' longer than 256 bytes", "oversize"),
        (ev_json(ts="yesterday"), "not RFC 3339", "invalid_field"),
        (ev_json(context={"blob": "x" * 5000}), "field 'context' larger", "oversize"),
        (ev_json(context={"pad": "x" * MAX_MESSAGE_BYTES}), "exceeds 65536", "oversize"),
    ],
)
def test_parse_records_dead_letters_with_envelope(value: bytes | None, error: str, reason: str) -> None:
    good = rec(ev_json(event_id="ok"), offset=1)
    bad = rec(value, offset=2, key=b"k\xff")
    p = parse_records([good, bad, good], now_ms=NOW)
    assert [e.event_id for e, _, _ in p.events] == ["ok", "ok"], "a bad record must not stop the batch"
    assert len(p.dead) == 1
    key, env, why = p.dead[0]
    assert key == b"k\xff" and why == reason
    d = orjson.loads(env)
    assert error in d["error"], d["error"]
    assert dlq_reason(d["error"]) == reason
    assert (d["topic"], d["partition"], d["offset"], d["ts"]) == ("clicks", 3, 2, NOW)
    assert base64.b64decode(d["key"]) == b"k\xff"
    assert base64.b64decode(d["raw"]) == (value or b"")


def test_parse_records_maps_unknown_event_type_to_other() -> None:
    p = parse_records([rec(ev_json(event_type="teleport")), rec(ev_json(event_type="purchase"), offset=1)], now_ms=NOW)
    assert [e.event_type for e, _, _ in p.events] == ["other", "purchase"]
    assert p.unknown_types == 1 and not p.dead


def test_parse_records_accepts_rfc3339_and_id_at_limit() -> None:
    p = parse_records([rec(ev_json(ts="2025-11-28T03:20:00.123Z", item_id="é" * 128))], now_ms=NOW)
    ((e, _, _),) = p.events
    assert e.ts == 1764300000123 and len(e.item_id.encode()) == 256


def test_buffer_entry_round_trip_keeps_pipes_in_item_ids() -> None:
    ev = ClickEvent("e", "u", "a|b|c", "gift", 42)
    assert decode_entry(encode_entry(ev)) == BufferEntry("a|b|c", "gift", 42)
    assert decode_entry(encode_entry(ev).encode()) == BufferEntry("a|b|c", "gift", 42)


def test_user_keys_share_one_hash_tag() -> None:
    keys = user_keys("u}x")
    assert {k.split("}")[0] for k in keys} == {"{u:u"}
    assert len(set(keys)) == 4


# ----------------------------------------------------------------------------- build_inputs
def test_build_inputs_left_pads_oldest_first_and_maps_unknown_items_to_oov() -> None:
    m = make_model(["a", "b", "c"], max_len=4, uses_gaps=False)
    bufs = {
        "u1": entries(("c", "purchase", 3000), ("zzz", "view", 2000), ("a", "click", 1000)),
        "u2": entries(("b", "like", 500)),
    }
    x = build_inputs(m, bufs, ["u1", "u2"])
    assert x.users == ["u1", "u2"]
    a, b, c = (ix(m, i) for i in "abc")
    # L is the longest window in the batch; newest at the last position
    assert x.items.tolist() == [[a, OOV, c], [0, 0, b]]
    t = {k.decode(): v for k, v in m.event_type_index.items()}
    assert x.types.tolist() == [[t["click"], t["view"], t["purchase"]], [0, 0, t["like"]]]
    assert x.items.dtype == np.int64 and x.types.dtype == np.int64 and x.gaps.dtype == np.int64
    assert [[decode_entry(e).item_id for e in w] for w in x.windows] == [["c", "zzz", "a"], ["b"]], "newest first"


def test_build_inputs_truncates_to_max_len_keeping_the_newest() -> None:
    m = make_model([f"i{k}" for k in range(10)], max_len=3, uses_gaps=False)
    buf = entries(*[(f"i{k}", "view", 1000 * k) for k in range(9, -1, -1)])  # newest (i9) first
    x = build_inputs(m, {"u": buf}, ["u"])
    assert x.items.tolist() == [[ix(m, "i7"), ix(m, "i8"), ix(m, "i9")]]


def test_build_inputs_skips_users_without_usable_history() -> None:
    m = make_model(["a"], uses_gaps=False)
    bufs = {"known": entries(("a", "view", 1)), "unknown": entries(("nope", "view", 1)), "empty": []}
    x = build_inputs(m, bufs, ["unknown", "known", "empty", "absent"])
    assert x.users == ["known"] and x.items.shape == (1, 1)
    empty = build_inputs(m, {"unknown": entries(("nope", "view", 1))}, ["unknown"])
    assert empty.users == [] and empty.items.shape[0] == 0 and empty.exclude.shape[0] == 0


def test_build_inputs_gaps_short_buffer() -> None:
    m = make_model(["a", "b", "c"], max_len=4)
    # oldest a@1000, b@3000 (2 s later), c@2500 (clock skew: earlier than b)
    x = build_inputs(m, {"u": entries(("c", "view", 2500), ("b", "view", 3000), ("a", "view", 1000))}, ["u"])
    assert x.gaps.tolist() == [[0, bucket(2000), 0]], "first event has no known gap; a negative gap is unknown (0)"


def test_build_inputs_gaps_use_the_event_before_the_window() -> None:
    """With more events in the buffer than max_len, the oldest kept event's gap comes from the
    event just before the window, and every gap belongs to its own position."""
    m = make_model(["a", "b", "c", "d"], max_len=3)
    # oldest first: a@0, b@+1 s, c@+3 s, d@+10 s; buffer newest first
    buf = entries(("d", "view", 10_000), ("c", "view", 3_000), ("b", "view", 1_000), ("a", "view", 0))
    x = build_inputs(m, {"u": buf}, ["u"])
    assert x.items.tolist() == [[ix(m, "b"), ix(m, "c"), ix(m, "d")]]
    assert x.gaps.tolist() == [[bucket(1_000), bucket(2_000), bucket(7_000)]]
    # and the same window without the older event: first gap unknown, the others unchanged
    y = build_inputs(m, {"u": buf[:3]}, ["u"])
    assert y.gaps.tolist() == [[0, bucket(2_000), bucket(7_000)]]


def test_build_inputs_without_types_or_gaps_leaves_zeros() -> None:
    m = make_model(["a", "b"], uses_types=False, uses_gaps=False)
    x = build_inputs(m, {"u": entries(("b", "gift", 9), ("a", "view", 1))}, ["u"])
    assert not x.types.any() and not x.gaps.any()


def test_build_inputs_exclusion_lists_every_known_seen_item() -> None:
    m = make_model(["a", "b", "c", "d"], max_len=2, uses_gaps=False)
    bufs = {
        # 'a' is beyond the window but still in the buffer: still excluded
        "u1": entries(("c", "view", 3), ("zzz", "view", 2), ("a", "view", 1)),
        "u2": entries(("b", "view", 1), ("b", "view", 0)),
    }
    x = build_inputs(m, bufs, ["u1", "u2"])
    ia, ib, ic = (ix(m, i) for i in "abc")
    rows = [set(r) - {PAD, OOV} for r in x.exclude.tolist()]  # PAD/OOV filler is harmless
    assert rows == [{ia, ic}, {ib}]
    # a narrower exclusion window drops the older item 'a' (the model window is always excluded)
    y = build_inputs(m, bufs, ["u1", "u2"], exclude_window=2)
    assert [set(r) - {PAD, OOV} for r in y.exclude.tolist()] == [{ic}, {ib}]
    off = build_inputs(m, bufs, ["u1", "u2"], exclude_seen=False)
    assert off.exclude.tolist() == [[0], [0]]


def reference_inputs(m: LoadedModel, raw: dict[str, list[bytes]], users: list[str], exclude_window: int | None):
    """The per-user, per-entry definition that the vectorised build_inputs must match."""
    rows = []
    for u in users:
        buf = [decode_entry(e) for e in raw.get(u) or []]
        window = buf[: m.max_len][::-1]  # oldest first
        idx = [m.item_index.get(e.item_id.encode(), OOV) for e in window]
        if not any(i > OOV for i in idx):
            continue
        types = [m.event_type_index.get(e.event_type.encode(), 1) for e in window]
        gaps = []
        for k, e in enumerate(window):
            older = window[k - 1] if k > 0 else (buf[m.max_len] if len(buf) > m.max_len else None)
            d = None if older is None else e.ts - older.ts
            gaps.append(0 if d is None or d < 0 else bucket(d))
        n_ex = len(buf) if exclude_window is None else exclude_window
        excl = {m.item_index.get(e.item_id.encode(), OOV) for e in buf[: max(len(window), n_ex)]}
        rows.append((u, idx, types, gaps, excl))
    return rows


@pytest.mark.parametrize("seed", range(20))
def test_build_inputs_matches_the_per_entry_definition_on_random_batches(seed: int) -> None:
    rng = np.random.default_rng(seed)
    m = make_model([f"i{k}" for k in range(30)], max_len=int(rng.integers(1, 8)))
    names = [f"i{k}" for k in range(40)]  # i30..i39 are unknown to the model
    raw: dict[str, list[bytes]] = {}
    for u in range(int(rng.integers(1, 12))):
        n = int(rng.integers(0, 15))
        ts = np.sort(rng.integers(0, 10**7, size=n))[::-1]  # newest first
        ts[rng.random(n) < 0.1] += 10**6  # some clock skew
        raw[f"u{u}"] = entries(*[(str(rng.choice(names)), str(rng.choice(["view", "click", "gift", "odd"])), int(t))
                                 for t in ts])  # fmt: skip
    users = list(raw) + ["absent"]
    ew = None if seed % 3 == 0 else int(rng.integers(0, 12))
    x = build_inputs(m, raw, users, exclude_window=ew)
    want = reference_inputs(m, raw, users, ew)
    assert x.users == [u for u, *_ in want]
    L = x.items.shape[1]
    for r, (_, idx, types, gaps, excl) in enumerate(want):
        pad = [0] * (L - len(idx))
        assert x.items[r].tolist() == pad + idx
        assert x.types[r].tolist() == pad + types
        assert x.gaps[r].tolist() == pad + gaps
        assert set(x.exclude[r].tolist()) - {PAD, OOV} == excl - {PAD, OOV}
    # the memo gives the same answer the second time (rows come from the table, not a parse)
    y = build_inputs(m, raw, users, exclude_window=ew)
    assert all((a == b).all() for a, b in zip((x.items, x.types, x.gaps, x.exclude), (y.items, y.types, y.gaps, y.exclude), strict=True))


def test_entry_table_starts_over_when_full_and_names_malformed_entries() -> None:
    from attnrec.stream.core.inputs import EntryTable

    m = make_model(["a", "b", "c"])
    t = EntryTable(m, capacity=4)
    e = entries(("a", "view", 1), ("b", "click", 2), ("c", "gift", 3))
    rows = t.rows(e)
    assert t.cols[0][rows].tolist() == [ix(m, "a"), ix(m, "b"), ix(m, "c")] and t.cols[2][rows].tolist() == [1, 2, 3]
    more = entries(("c", "view", 4), ("a", "view", 5))  # 5 rows > capacity 4: the table starts over
    rows2 = t.rows(more)
    assert t.cols[0][rows2].tolist() == [ix(m, "c"), ix(m, "a")] and t.cols[2][rows2].tolist() == [4, 5]
    assert t.cols[0][t.rows(e[:1])].tolist() == [ix(m, "a")]
    with pytest.raises(ValueError, match="malformed buffer entry"):
        t.rows([b"no-pipes-here"])


# ----------------------------------------------------------------------------- recommend
def trig(user: str, eid: str = "t1", ts: int = NOW - 5) -> ClickEvent:
    return ClickEvent(eid, user, "a", "click", ts)


def test_recommend_from_model_outputs_with_because() -> None:
    m = make_model(["a", "b", "c", "d", "e"], max_len=4, uses_gaps=False)
    bufs = {"u": entries(("c", "purchase", 3), ("b", "view", 2), ("a", "click", 1))}
    x = build_inputs(m, bufs, ["u"])
    top = np.array([[ix(m, "e"), ix(m, "d"), OOV, 0]], dtype=np.int64)
    scores = np.array([[5.0, 4.0, 3.0, -np.inf]], dtype=np.float32)
    attn = np.array([[0.2, 0.7, 0.1]], dtype=np.float32)  # over a, b, c
    (r,) = recommend(
        m, ["u"], bufs, {"u": trig("u")}, top_k=10, because_k=2, outputs=(top, scores, attn), inputs=x, now_ms=NOW
    )
    p = r.payload
    assert p["items"] == [{"item_id": "e", "score": 5.0}, {"item_id": "d", "score": 4.0}], "OOV/PAD and -inf dropped"
    assert p["because"] == [
        {"item_id": "b", "event_type": "view", "weight": 0.7},
        {"item_id": "a", "event_type": "click", "weight": 0.2},
    ]
    assert p["fallback"] is False and p["model_version"] == "v-test"
    assert (p["trigger_event_id"], p["event_ts"], p["emitted_ts"]) == ("t1", NOW - 5, NOW)
    assert orjson.loads(r.to_json()) == p


def test_recommend_because_ignores_left_padding() -> None:
    m = make_model(["a", "b", "c"], max_len=4, uses_gaps=False)
    bufs = {"long": entries(("c", "view", 3), ("b", "view", 2), ("a", "view", 1)), "short": entries(("a", "like", 1))}
    x = build_inputs(m, bufs, ["long", "short"])
    top = np.full((2, 1), ix(m, "b"), dtype=np.int64)
    scores = np.ones((2, 1), dtype=np.float32)
    attn = np.array([[0.1, 0.3, 0.6], [0.0, 0.0, 1.0]], dtype=np.float32)
    r = {x.user_id: x for x in recommend(m, ["long", "short"], bufs, {"long": trig("long"), "short": trig("short")},
                                         because_k=3, outputs=(top, scores, attn), inputs=x)}  # fmt: skip
    assert [b["item_id"] for b in r["long"].payload["because"]] == ["c", "b", "a"]
    assert r["short"].payload["because"] == [{"item_id": "a", "event_type": "like", "weight": 1.0}]


def test_recommend_top_k_truncates() -> None:
    m = make_model(["a", "b", "c", "d"], uses_gaps=False)
    bufs = {"u": entries(("a", "view", 1))}
    x = build_inputs(m, bufs, ["u"])
    top = np.array([[ix(m, i) for i in "bcd"]], dtype=np.int64)
    scores = np.array([[3.0, 2.0, 1.0]], dtype=np.float32)
    (r,) = recommend(m, ["u"], bufs, {"u": trig("u")}, top_k=2, outputs=(top, scores, np.ones((1, 1))), inputs=x)
    assert [i["item_id"] for i in r.payload["items"]] == ["b", "c"]


def test_recommend_fallback_for_users_without_history_excludes_seen() -> None:
    m = make_model(["a", "b", "c"], popularity=["c", "nope", "a", "b"], uses_gaps=False)
    bufs = {"cold": entries(("nope", "view", 1)), "warm": entries(("a", "view", 1))}
    x = build_inputs(m, bufs, ["cold", "warm"])
    assert x.users == ["warm"]
    top = np.array([[ix(m, "b")]], dtype=np.int64)
    out = (top, np.ones((1, 1), dtype=np.float32), np.ones((1, 1), dtype=np.float32))
    r = {x.user_id: x.payload for x in recommend(m, ["cold", "warm"], bufs, {"cold": trig("cold", "c1"), "warm": trig("warm", "w1")},
                                                 top_k=2, outputs=out, inputs=x)}  # fmt: skip
    assert r["cold"]["fallback"] is True and r["cold"]["because"] == []
    assert [i["item_id"] for i in r["cold"]["items"]] == ["c", "a"], "popularity order, seen 'nope' excluded, top_k"
    assert r["cold"]["trigger_event_id"] == "c1" and r["cold"]["model_version"] == "v-test"
    assert r["warm"]["fallback"] is False


def test_recommend_without_a_model_serves_given_popularity() -> None:
    bufs = {"u": entries(("x", "view", 1))}
    (r,) = recommend(None, ["u"], bufs, {"u": trig("u")}, popularity=["x", "y", "z"], top_k=5, now_ms=NOW)
    p = r.payload
    assert p["fallback"] is True and p["model_version"] is None
    assert p["items"] == [{"item_id": "y", "score": 0.0}, {"item_id": "z", "score": 0.0}]
    (r2,) = recommend(None, ["u"], bufs, {"u": trig("u")}, popularity=["x", "y"], exclude_seen=False)
    assert [i["item_id"] for i in r2.payload["items"]] == ["x", "y"]


def test_recommend_one_per_user_in_given_order() -> None:
    bufs = {"u1": [], "u2": []}
    recs = recommend(None, ["u2", "u1"], bufs, {"u1": trig("u1", "a"), "u2": trig("u2", "b")})
    assert [(r.user_id, r.payload["trigger_event_id"]) for r in recs] == [("u2", "b"), ("u1", "a")]


def test_parse_records_cuts_huge_raw_to_fit_a_dead_letter() -> None:
    """A message near the broker's 1 MB limit: its base64 envelope would exceed the
    producer's request size, a permanent error the worker would retry forever."""
    from attnrec.stream.core.records import MAX_DLQ_RAW

    value = b'{"pad": "' + b"x" * 900_000 + b'"}'
    p = parse_records([rec(value, offset=5)], now_ms=NOW)
    ((_, env, why),) = p.dead
    assert why == "oversize" and len(env) < 512 * 1024
    d = orjson.loads(env)
    assert base64.b64decode(d["raw"]) == value[:MAX_DLQ_RAW]
    assert f"first {MAX_DLQ_RAW} of {len(value)} bytes" in d["error"] and "exceeds 65536" in d["error"]
