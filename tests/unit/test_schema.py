from __future__ import annotations

import base64

import orjson
import pytest

from attnrec.errors import InvalidEventError
from attnrec.events import MAX_MESSAGE_BYTES, ClickEvent, dlq_envelope, parse_event, parse_ts

GOOD = {"event_id": "e1", "user_id": "u1", "item_id": "sku-1", "event_type": "purchase", "ts": 1764300000123,
        "context": {"room_id": "live-7"}}  # fmt: skip


def raw(**kw: object) -> bytes:
    d = dict(GOOD)
    d.update(kw)
    return orjson.dumps({k: v for k, v in d.items() if v is not ...})


def test_parses_a_valid_event() -> None:
    ev = parse_event(raw())
    assert ev == ClickEvent("e1", "u1", "sku-1", "purchase", 1764300000123, {"room_id": "live-7"})
    assert parse_event(ev.to_json()) == ev


def test_rfc3339_timestamps() -> None:
    assert parse_event(raw(ts="2025-11-28T03:20:00.123Z")).ts == 1764300000123
    assert parse_ts("2025-11-28T04:20:00.123+01:00") == 1764300000123
    with pytest.raises(InvalidEventError, match="lacks a UTC offset"):
        parse_ts("2025-11-28T03:20:00")


def test_unknown_type_maps_to_other() -> None:
    ev = parse_event(raw(event_type="teleport"))
    assert ev.event_type == "other" and ev.unknown_type


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (raw(ts=...), "missing field 'ts'"),
        (raw(user_id=""), "'user_id' is empty"),
        (raw(item_id=42), "'item_id' must be a string"),
        (raw(item_id="x" * 300), "longer than 256 bytes"),
        (raw(ts=True), "bool"),
        (raw(ts=-5), "negative"),
        (raw(context=[1]), "'context' must be an object"),
        (raw(context={"x": "y" * 5000}), "'context' larger than"),
        (b"{" + b" " * MAX_MESSAGE_BYTES + b"}", "exceeds"),
        (None, "empty message"),
    ],
)
def test_rejects_with_a_message_naming_the_problem(payload: bytes | None, match: str) -> None:
    with pytest.raises(InvalidEventError, match=match):
        parse_event(payload)


def test_dlq_envelope_keeps_the_original_bytes() -> None:
    env = orjson.loads(dlq_envelope("invalid event: x", b"\xff\x00", b"k", "clicks", 3, 1234, 99))
    assert base64.b64decode(env["raw"]) == b"\xff\x00"
    assert base64.b64decode(env["key"]) == b"k"
    assert (env["topic"], env["partition"], env["offset"], env["ts"]) == ("clicks", 3, 1234, 99)
    assert orjson.loads(dlq_envelope("e", b"", None, "t", 0, 0, 0))["key"] is None
