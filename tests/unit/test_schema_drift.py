"""One source of truth: the worker's parsers and producers agree with the published schemas.

- clicks: every message :func:`parse_event` accepts is valid under the clicks schema, so a
  message the schema rejects is always dead-lettered with a reason; a message the schema
  accepts and the parser rejects fails only for a documented reason (bytes, sizes, time
  strings: docs/schemas/README.md).
- catalog: the same for :func:`parse_catalog_event`.
- recs: what :func:`attnrec.stream.core.inputs.recommend` builds over random buffers and model outputs.
- clicks.dlq: the envelopes :func:`attnrec.stream.core.inputs.parse_records` builds for any bytes.

Property-based (Hypothesis, the "ci" profile of tests/conftest.py); the records of a real
worker run are checked by tests/integration/test_schema_contract.py.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from attnrec.stream.core.entries import encode_entry
from attnrec.stream.core.inputs import build_inputs
from attnrec.stream.core.recommend import recommend
from attnrec.stream.core.records import RawRecord, parse_records
from hypothesis import given, settings
from hypothesis import strategies as st

from attnrec import schemas
from attnrec.errors import InvalidEventError
from attnrec.events import (
    CATALOG_STATUSES,
    KNOWN_EVENT_TYPES,
    SHORT_VIEW_MS,
    ClickEvent,
    dlq_envelope,
    parse_catalog_event,
    parse_event,
)
from tests.unit.test_worker_logic import make_model

#: Why the parser may reject what the schema accepts (JSON Schema cannot say these).
KNOWN_STRICTER = ("bytes", "larger than", "exceeds", "not RFC 3339", "lacks a UTC offset", "not a valid time",
                  "needs a field 'count'", "not JSON")

hostile = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12) | st.sampled_from(
    ["", " ", "|", "\x00", "💥", "é" * 100, "é" * 129, "x" * 256, "x" * 257, "{u:x}"])
json_values = st.recursive(st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)
                           | hostile, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile, inner, max_size=3),
                           max_leaves=6)  # fmt: skip
timestamps = (st.integers(-5, 2**53) | st.floats(-1.0, 2e12, allow_nan=False) | st.booleans() | st.none()
              | st.sampled_from(["2025-11-28T03:20:00.123Z", "2025-11-28T04:20:00+01:00", "2025-11-28 03:20:00z",
                                 " 2025-11-28T03:20:00Z ", "2025-11-28T03:20:00", "2025-11-28", "2025-13-45T00:00:00Z",
                                 "20251128T032000+0000", "2025-11-28T03:20:00+01", "2025-11-28T03:20:00.5-05:30",
                                 "yesterday", "", "1764300000123", "2025-W48-5T03:20:00Z", "2025-11-28T03:20Z"]))  # fmt: skip


ids = hostile.filter(lambda s: 0 < len(s.encode()) <= 256)
some_ids = st.one_of(ids, ids, ids, hostile)  # mostly valid
some_ts = st.one_of(st.integers(0, 2**53), st.sampled_from(["2025-11-28T03:20:00.123Z", "2025-11-28T04:20:00+01:00"]),
                    timestamps, timestamps)  # fmt: skip
#: More examples than the profile's default for the agreement tests (they are cheap).
MORE = settings(max_examples=max(300, settings.default.max_examples))


@st.composite
def click_dicts(draw: Any) -> dict[str, Any]:
    """Mostly valid click events; any field missing, mistyped or at a limit now and then."""
    d: dict[str, Any] = {k: draw(some_ids) for k in ("event_id", "user_id", "item_id")}
    d["event_type"] = draw(st.sampled_from(sorted(KNOWN_EVENT_TYPES)) | hostile)
    d["ts"] = draw(some_ts)
    if draw(st.booleans()):
        ctx = draw(st.none() | st.dictionaries(hostile, json_values, max_size=3) | json_values)
        if isinstance(ctx, dict) and draw(st.booleans()):
            ctx["dwell_ms"] = draw(st.integers(-10, 5000) | st.floats(0, 5000) | json_values)
        if isinstance(ctx, dict) and draw(st.integers(0, 9)) == 0:
            ctx["pad"] = "x" * draw(st.integers(3900, 4200))
        d["context"] = ctx
    if draw(st.booleans()):
        d[draw(hostile)] = draw(json_values)  # unknown fields are ignored (or overwrite a known one)
    for key in draw(st.lists(st.sampled_from(sorted(d)), max_size=1)):
        if draw(st.booleans()):
            del d[key]
        else:
            d[key] = draw(json_values)
    return d


def agree(name: str, parse: Any, d: Any) -> None:
    raw = orjson.dumps(d)
    errors = schemas.validate(name, d)
    try:
        parse(raw)
    except InvalidEventError as exc:
        if not errors:  # the schema accepts it: the parser may be stricter, for a documented reason only
            assert any(k in str(exc) for k in KNOWN_STRICTER), f"schema accepts, parser rejects: {exc}\n{d!r}"
        return
    assert errors == [], f"the parser accepts a message the {name} schema rejects: {errors}\n{d!r}"


@MORE
@given(click_dicts())
def test_every_click_the_parser_accepts_is_valid_under_the_schema(d: dict[str, Any]) -> None:
    agree("clicks", parse_event, d)


@given(click_dicts())
def test_a_click_the_schema_rejects_is_dead_lettered_with_a_reason(d: dict[str, Any]) -> None:
    raw = orjson.dumps(d)
    parsed = parse_records([RawRecord("clicks", 2, 7, b"k", raw)], now_ms=1)
    if schemas.validate("clicks", d):
        assert not parsed.events and len(parsed.dead) == 1
        env = orjson.loads(parsed.dead[0][1])
        assert env["error"].startswith("invalid event: ") and parsed.dead[0][2]
        assert schemas.validate("clicks.dlq", env) == []
    else:
        assert parsed.events or any(k in orjson.loads(parsed.dead[0][1])["error"] for k in KNOWN_STRICTER)


@pytest.mark.parametrize(("d", "valid", "parsed"), [
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "teleport", "ts": 1}, True, True),
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "", "ts": 1.5, "context": None}, True, True),
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": "2025-11-28T03:20:00Z",
      "context": {"dwell_ms": 500}}, True, True),
    ({"event_id": "e", "user_id": "u", "item_id": "é" * 129, "event_type": "view", "ts": 1}, True, False),  # 258 bytes
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": "2025-11-28T03:20:00"}, False, False),
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": True}, False, False),
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": 3, "ts": 1}, False, False),
    ({"event_id": "e", "user_id": "", "item_id": "i", "event_type": "view", "ts": 1}, False, False),
    ({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "view", "ts": 1, "context": []}, False, False),
])  # fmt: skip
def test_known_cases_of_the_click_contract(d: dict[str, Any], valid: bool, parsed: bool) -> None:
    assert (schemas.validate("clicks", d) == []) is valid
    try:
        parse_event(orjson.dumps(d))
    except InvalidEventError:
        assert not parsed
    else:
        assert parsed


def test_the_click_schema_documents_the_parsers_event_types_and_rules() -> None:
    et = schemas.load("clicks")["properties"]["event_type"]
    assert set(et["examples"]) == KNOWN_EVENT_TYPES - {"skip"}  # skip is derived (and accepted as sent)
    for word in ("'other'", "'skip'", str(SHORT_VIEW_MS)):
        assert word in et["description"], word
    assert parse_event(orjson.dumps({"event_id": "e", "user_id": "u", "item_id": "i", "event_type": "click",
                                     "ts": 1, "context": {"dwell_ms": SHORT_VIEW_MS - 1}})).event_type == "skip"
    status = schemas.load("catalog")["properties"]["status"]
    assert tuple(status["enum"]) == CATALOG_STATUSES


@st.composite
def catalog_dicts(draw: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"event_id": draw(some_ids), "item_id": draw(some_ids),
                         "status": draw(st.sampled_from(CATALOG_STATUSES) | hostile), "ts": draw(some_ts)}
    if d["status"] == "stock" or draw(st.booleans()):
        d["count"] = draw(st.one_of(st.integers(0, 50), st.integers(0, 50), st.integers(-2, 50), st.none(), json_values))
    for k in ("category", "room_id"):
        if draw(st.booleans()):
            d[k] = draw(some_ids | st.none() | json_values)
    for key in draw(st.lists(st.sampled_from(sorted(d)), max_size=1)):
        del d[key]
    return d


@MORE
@given(catalog_dicts())
def test_every_catalog_event_the_parser_accepts_is_valid_under_the_schema(d: dict[str, Any]) -> None:
    agree("catalog", parse_catalog_event, d)


# ------------------------------------------------------------------------------ what the worker produces


@st.composite
def batches(draw: Any) -> tuple[Any, ...]:
    items = draw(st.lists(ids, min_size=1, max_size=8, unique=True))
    model = make_model(items, max_len=draw(st.integers(1, 6)), uses_gaps=draw(st.booleans()))
    users = draw(st.lists(ids, min_size=1, max_size=5, unique=True))
    types = sorted(KNOWN_EVENT_TYPES | {"other"})
    raw = {u: [encode_entry(ClickEvent("e", u, draw(st.sampled_from(items) | ids), draw(st.sampled_from(types)),
                                       draw(st.integers(0, 2**41)))).encode()
               for _ in range(draw(st.integers(0, 8)))] for u in users}  # fmt: skip
    triggers = {u: ClickEvent(draw(ids), u, "i", "view", draw(st.integers(0, 2**53))) for u in users}
    return model, users, raw, triggers


@given(batches(), st.data())
def test_every_recommendation_is_valid_under_the_recs_schema(batch: tuple[Any, ...], data: Any) -> None:
    model, users, raw, triggers = batch
    with_model = data.draw(st.booleans())
    kw: dict[str, Any] = {"top_k": data.draw(st.integers(1, 12)), "because_k": data.draw(st.integers(0, 4)),
                          "now_ms": data.draw(st.integers(0, 2**42))}
    if with_model:
        x = build_inputs(model, raw, users)
        n, k, width = len(x.users), data.draw(st.integers(1, 6)), x.items.shape[1]
        top = np.array(data.draw(st.lists(st.integers(0, len(model.item_ids) - 1), min_size=n * k, max_size=n * k)),
                       dtype=np.int64).reshape(n, k)  # fmt: skip
        scores = np.array(data.draw(st.lists(st.floats(-1e30, 1e30) | st.just(-np.inf), min_size=n * k,
                                             max_size=n * k)), dtype=np.float32).reshape(n, k)  # fmt: skip
        logits = np.array(data.draw(st.lists(st.floats(-20, 20), min_size=n * width, max_size=n * width))).reshape(n, width)
        attn = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
        recs = recommend(model, users, raw, triggers, outputs=(top, scores, attn), inputs=x, **kw)
    else:
        recs = recommend(None, users, raw, triggers, popularity=data.draw(st.lists(ids, max_size=12)), **kw)
    assert [r.user_id for r in recs] == users
    for r in recs:
        payload = orjson.loads(r.to_json())
        assert schemas.validate("recs", payload) == [], payload


@given(st.binary(max_size=400) | click_dicts().map(orjson.dumps) | st.none(), st.none() | st.binary(max_size=20))
def test_every_dead_letter_is_valid_under_the_dlq_schema(value: bytes | None, key: bytes | None) -> None:
    parsed = parse_records([RawRecord("clicks", 5, 99, key, value)], now_ms=1_764_300_000_000)
    for k, env, _ in parsed.dead:
        assert k == key
        assert schemas.validate("clicks.dlq", orjson.loads(env)) == []
    poison = dlq_envelope("poison: processing failed 5 times: boom", value, key, "clicks", 5, 99, 1)
    assert schemas.validate("clicks.dlq", orjson.loads(poison)) == []
