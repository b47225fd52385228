"""Property-based tests (Hypothesis) of what the worker reads: the event parser and the
buffer-entry format. Bounded in ``make test`` (the "ci" profile); a longer run:

    HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/unit/test_fuzz.py tests/integration/test_fuzz_apply.py
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
from attnrec.stream.core.entries import decode_entry, encode_entry, entry_item, split_entry
from attnrec.stream.core.records import RawRecord, parse_records
from hypothesis import given
from hypothesis import strategies as st

from attnrec.errors import InvalidEventError
from attnrec.events import (
    KNOWN_EVENT_TYPES,
    MAX_CONTEXT_BYTES,
    MAX_ID_BYTES,
    MAX_MESSAGE_BYTES,
    ClickEvent,
    parse_event,
)

#: Strings that break naive parsers: separators, quotes, controls, surrogates-free unicode.
hostile = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), min_size=0, max_size=40) | st.sampled_from(
    ["|", "||", "a|b|c", "\x00", "\n", '"', "\\", "💥", " ", "{u:x}", "ts|type|item"])
ids = hostile.filter(lambda x: 0 < len(x.encode()) <= MAX_ID_BYTES)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | hostile,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(hostile, inner, max_size=3),
                           max_leaves=8)


@st.composite
def event_dicts(draw: Any) -> dict[str, Any]:
    """Mostly valid events, with any field missing, mistyped or hostile now and then."""
    d: dict[str, Any] = {"event_id": draw(ids), "user_id": draw(ids), "item_id": draw(ids),
                         "event_type": draw(st.sampled_from(sorted(KNOWN_EVENT_TYPES)) | hostile),
                         "ts": draw(st.integers(min_value=0, max_value=2**53) | st.just("2026-11-28T09:30:00Z"))}
    if draw(st.booleans()):
        d["context"] = draw(st.dictionaries(hostile, json_values, max_size=4))
    for key in draw(st.lists(st.sampled_from(sorted(d)), max_size=2, unique=True)):
        if draw(st.booleans()):
            del d[key]
        else:
            d[key] = draw(json_values)
    return d


@given(st.binary(max_size=300))
def test_any_bytes_are_an_event_or_a_named_rejection(raw: bytes) -> None:
    try:
        ev = parse_event(raw)
    except InvalidEventError as exc:
        assert str(exc).startswith("invalid event: ")
    else:
        assert isinstance(ev, ClickEvent) and ev.event_id and ev.user_id and ev.item_id


@given(event_dicts())
def test_events_parse_to_their_fields_or_are_rejected_with_the_reason(d: dict[str, Any]) -> None:
    raw = orjson.dumps(d)
    try:
        ev = parse_event(raw)
    except InvalidEventError as exc:
        msg = str(exc)
        assert msg.startswith("invalid event: ")
        assert len(raw) > MAX_MESSAGE_BYTES or any(k in msg for k in ("missing field", "must be", "is empty", "longer than",
                                                                       "'ts'", "'context'", "expected a JSON object"))
        return
    assert (ev.event_id, ev.user_id, ev.item_id) == (d["event_id"], d["user_id"], d["item_id"])
    assert ev.event_type in KNOWN_EVENT_TYPES | {"other"}
    assert ev.unknown_type == (d["event_type"] not in KNOWN_EVENT_TYPES)
    assert len(orjson.dumps(ev.context)) <= MAX_CONTEXT_BYTES or not ev.context


@given(ids, st.sampled_from(sorted(KNOWN_EVENT_TYPES | {"other"})), st.integers(min_value=0, max_value=2**53))
def test_a_buffer_entry_gives_back_its_item_type_and_time(item: str, event_type: str, ts: int) -> None:
    raw = encode_entry(ClickEvent("e", "u", item, event_type, ts)).encode()
    assert entry_item(raw) == item
    assert split_entry(raw) == (str(ts).encode(), event_type.encode(), item.encode())
    e = decode_entry(raw)
    assert (e.item_id, e.event_type, e.ts) == (item, event_type, ts)


@given(st.lists(st.one_of(event_dicts().map(orjson.dumps), st.binary(max_size=80), st.none()), max_size=12))
def test_a_batch_splits_into_events_and_dead_letters_that_keep_the_original_bytes(values: list[bytes | None]) -> None:
    records = [RawRecord("clicks", 3, 100 + k, b"key", v) for k, v in enumerate(values)]
    parsed = parse_records(records, now_ms=0)
    assert len(parsed.events) + len(parsed.dead) == len(records)
    assert sorted(parsed.sources + parsed.dead_sources) == list(range(len(records)))
    for (key, env, reason), src in zip(parsed.dead, parsed.dead_sources, strict=True):
        d = orjson.loads(env)
        original = values[src]
        assert key == b"key" and reason and d["offset"] == 100 + src and d["partition"] == 3
        assert base64.b64decode(d["raw"]) == (original or b"")
    for (ev, field, offset), src in zip(parsed.events, parsed.sources, strict=True):
        assert field == "clicks:3" and offset == 100 + src and ev.event_id == orjson.loads(values[src] or b"{}")["event_id"]
