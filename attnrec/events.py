"""The click-event and recommendation schemas, defined once.

This module imports neither faust nor torch: the producer tools, the worker and the training
loaders all use it. Parsing works on raw bytes, so a malformed message never reaches a Faust
codec (a decode error inside a Faust stream can silently end an agent).
"""

from __future__ import annotations

import base64
import datetime as _dt
from dataclasses import dataclass, field
from typing import Any

import orjson

from attnrec.errors import InvalidEventError

__all__ = [
    "EVENT_TYPES",
    "KNOWN_EVENT_TYPES",
    "MAX_ID_BYTES",
    "MAX_CONTEXT_BYTES",
    "MAX_MESSAGE_BYTES",
    "ClickEvent",
    "CatalogEvent",
    "CATALOG_STATUSES",
    "NEGATIVE_TYPES",
    "SHORT_VIEW_MS",
    "parse_event",
    "parse_catalog_event",
    "catalog_from_dict",
    "parse_ts",
    "event_from_dict",
    "dlq_envelope",
]

#: Event types in vocabulary order. Index 0 of the model's type vocabulary is padding, so a
#: type's model index is ``EVENT_TYPES.index(t) + 1``. Unknown types map to ``other``.
#: ``impression`` (shown, not clicked: sent by the feed) and ``skip`` (a view or click whose
#: ``context.dwell_ms`` is under :data:`SHORT_VIEW_MS`; the parser derives it) are the negative
#: signals: the model sees them as types, the policy keeps their items out for a while.
EVENT_TYPES: tuple[str, ...] = ("other", "view", "click", "like", "cart", "purchase", "gift", "share", "impression", "skip")
KNOWN_EVENT_TYPES = frozenset(EVENT_TYPES) - {"other"}
NEGATIVE_TYPES = frozenset({"impression", "skip"})
#: A view or click shorter than this (``context.dwell_ms``) is a ``skip``: a negative signal.
SHORT_VIEW_MS = 2000

MAX_ID_BYTES = 256
MAX_CONTEXT_BYTES = 4 * 1024
MAX_MESSAGE_BYTES = 64 * 1024
_REQUIRED = ("event_id", "user_id", "item_id", "event_type", "ts")


@dataclass(frozen=True, slots=True)
class ClickEvent:
    """One user behaviour. ``ts`` is epoch milliseconds (UTC)."""

    event_id: str
    user_id: str
    item_id: str
    event_type: str
    ts: int
    context: dict[str, Any] = field(default_factory=dict)
    #: True when the producer sent an event type outside the vocabulary (mapped to ``other``).
    unknown_type: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "event_id": self.event_id,
            "user_id": self.user_id,
            "item_id": self.item_id,
            "event_type": self.event_type,
            "ts": self.ts,
        }
        if self.context:
            d["context"] = self.context
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def parse_ts(value: Any) -> int:
    """Epoch milliseconds from an int/float (ms) or an RFC 3339 string."""
    if isinstance(value, bool):
        raise InvalidEventError("invalid event: field 'ts' must be epoch ms or RFC 3339, got bool")
    if isinstance(value, int):
        if value < 0:
            raise InvalidEventError("invalid event: field 'ts' is negative")
        return value
    if isinstance(value, float):
        if value != value or value < 0:  # NaN or negative
            raise InvalidEventError("invalid event: field 'ts' is not a valid time")
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        try:
            t = _dt.datetime.fromisoformat(s)
        except ValueError:
            raise InvalidEventError(f"invalid event: field 'ts' is not RFC 3339: {value[:64]!r}") from None
        if t.tzinfo is None:
            raise InvalidEventError("invalid event: field 'ts' RFC 3339 string lacks a UTC offset")
        return int(t.timestamp() * 1000)
    raise InvalidEventError(f"invalid event: field 'ts' has type {type(value).__name__}")


def _check_id(d: dict[str, Any], name: str) -> str:
    v = d[name]
    if not isinstance(v, str):
        raise InvalidEventError(f"invalid event: field {name!r} must be a string, got {type(v).__name__}")
    if not v:
        raise InvalidEventError(f"invalid event: field {name!r} is empty")
    if len(v.encode("utf-8")) > MAX_ID_BYTES:
        raise InvalidEventError(f"invalid event: field {name!r} longer than {MAX_ID_BYTES} bytes")
    return v


def event_from_dict(d: Any) -> ClickEvent:
    """Validate a decoded JSON object. Raises :class:`InvalidEventError` naming the problem."""
    if not isinstance(d, dict):
        raise InvalidEventError(f"invalid event: expected a JSON object, got {type(d).__name__}")
    for name in _REQUIRED:
        if name not in d:
            raise InvalidEventError(f"invalid event: missing field {name!r}")
    event_id = _check_id(d, "event_id")
    user_id = _check_id(d, "user_id")
    item_id = _check_id(d, "item_id")
    et = d["event_type"]
    if not isinstance(et, str):
        raise InvalidEventError(f"invalid event: field 'event_type' must be a string, got {type(et).__name__}")
    unknown = et not in KNOWN_EVENT_TYPES
    ts = parse_ts(d["ts"])
    ctx = d.get("context")
    if ctx is None:
        ctx = {}
    elif not isinstance(ctx, dict):
        raise InvalidEventError(f"invalid event: field 'context' must be an object, got {type(ctx).__name__}")
    elif ctx and len(orjson.dumps(ctx)) > MAX_CONTEXT_BYTES:
        raise InvalidEventError(f"invalid event: field 'context' larger than {MAX_CONTEXT_BYTES} bytes")
    et = "other" if unknown else et
    if et in ("view", "click"):
        dwell = ctx.get("dwell_ms")
        if isinstance(dwell, (int, float)) and not isinstance(dwell, bool) and 0 <= dwell < SHORT_VIEW_MS:
            et = "skip"  # a short view is a negative signal
    return ClickEvent(event_id, user_id, item_id, et, ts, ctx, unknown)


def _decode(raw: bytes | bytearray | memoryview | None, what: str) -> Any:
    """The JSON value of a message; :class:`InvalidEventError` ("invalid <what>: ...") when it is
    null, over :data:`MAX_MESSAGE_BYTES` or not JSON."""
    if raw is None:
        raise InvalidEventError(f"invalid {what}: empty message (null value)")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise InvalidEventError(f"invalid {what}: message of {len(raw)} bytes exceeds {MAX_MESSAGE_BYTES}")
    try:
        return orjson.loads(bytes(raw))
    except orjson.JSONDecodeError as exc:
        raise InvalidEventError(f"invalid {what}: not JSON ({exc})") from None


def parse_event(raw: bytes | bytearray | memoryview | None) -> ClickEvent:
    """Parse and validate raw message bytes into a :class:`ClickEvent`."""
    return event_from_dict(_decode(raw, "event"))


def dlq_envelope(
    error: str,
    raw: bytes | None,
    key: bytes | None,
    topic: str,
    partition: int,
    offset: int,
    ts_ms: int,
) -> bytes:
    """The dead-letter envelope of DESIGN.md, as JSON bytes."""
    return orjson.dumps(
        {
            "error": error,
            "raw": base64.b64encode(raw).decode("ascii") if raw is not None else "",
            "key": base64.b64encode(key).decode("ascii") if key is not None else None,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "ts": ts_ms,
        }
    )


# --- the catalog topic: room and item status -----------------------------------------------------
#: Status values of a catalog event. ``live``/``ended`` are a room's; ``on_shelf``/``off_shelf``
#: a product's; ``stock`` carries ``count`` (0 = sold out, unavailable until stock returns).
CATALOG_STATUSES = ("live", "ended", "on_shelf", "off_shelf", "stock")


@dataclass(frozen=True, slots=True)
class CatalogEvent:
    """One status change of an item (a live room or a product). ``ts`` is epoch ms."""

    event_id: str
    item_id: str
    status: str
    ts: int
    count: int | None = None  # status "stock" only
    category: str | None = None
    room_id: str | None = None  # a product's room (informational; trending per room)

    @property
    def available(self) -> bool:
        """Whether the item may be recommended after this event."""
        if self.status == "stock":
            return (self.count or 0) > 0
        return self.status in ("live", "on_shelf")

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"event_id": self.event_id, "item_id": self.item_id, "status": self.status, "ts": self.ts}
        for k in ("count", "category", "room_id"):
            v = getattr(self, k)
            if v is not None:
                d[k] = v
        return d

    def to_json(self) -> bytes:
        return orjson.dumps(self.to_dict())


def catalog_from_dict(d: Any) -> CatalogEvent:
    """Validate a decoded catalog event. Raises :class:`InvalidEventError` naming the problem."""
    if not isinstance(d, dict):
        raise InvalidEventError(f"invalid catalog event: expected a JSON object, got {type(d).__name__}")
    for name in ("event_id", "item_id", "status", "ts"):
        if name not in d:
            raise InvalidEventError(f"invalid catalog event: missing field {name!r}")
    try:
        event_id, item_id = _check_id(d, "event_id"), _check_id(d, "item_id")
        ts = parse_ts(d["ts"])
    except InvalidEventError as exc:
        raise InvalidEventError(str(exc).replace("invalid event", "invalid catalog event")) from None
    status = d["status"]
    if status not in CATALOG_STATUSES:
        raise InvalidEventError(f"invalid catalog event: field 'status' must be one of {', '.join(CATALOG_STATUSES)}, got {str(status)[:64]!r}")
    count = d.get("count")
    if status == "stock":
        if not isinstance(count, int) or isinstance(count, bool) or count < 0:
            raise InvalidEventError("invalid catalog event: status 'stock' needs a field 'count' >= 0")
    elif count is not None:
        raise InvalidEventError("invalid catalog event: field 'count' belongs to status 'stock' only")
    extra = {}
    for name in ("category", "room_id"):
        v = d.get(name)
        if v is not None:
            if not isinstance(v, str) or not v or len(v.encode("utf-8")) > MAX_ID_BYTES:
                raise InvalidEventError(f"invalid catalog event: field {name!r} must be a non-empty string of at most {MAX_ID_BYTES} bytes")
            extra[name] = v
    return CatalogEvent(event_id, item_id, status, ts, count if status == "stock" else None, **extra)


def parse_catalog_event(raw: bytes | bytearray | memoryview | None) -> CatalogEvent:
    """Parse and validate raw message bytes into a :class:`CatalogEvent`."""
    return catalog_from_dict(_decode(raw, "catalog event"))
