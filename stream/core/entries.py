"""The buffer-entry format: what the Redis ``{u:<id>}:recent`` lists hold, one string per event,
``"<ts>|<event_type>|<item_id>"``. The item id goes last: it may contain ``|``, and
``split(maxsplit=2)`` keeps it whole."""

from __future__ import annotations

from dataclasses import dataclass

from attnrec.events import ClickEvent

__all__ = ["BufferEntry", "format_entry", "encode_entry", "decode_entry", "split_entry", "entry_item"]


@dataclass(frozen=True, slots=True)
class BufferEntry:
    item_id: str
    event_type: str
    ts: int


def format_entry(ts: int, event_type: str, item_id: str) -> str:
    """A buffer entry ``"<ts>|<event_type>|<item_id>"``. The item id goes last: it may contain
    ``|``, and ``split(maxsplit=2)`` keeps it whole."""
    return f"{ts}|{event_type}|{item_id}"


def encode_entry(ev: ClickEvent) -> str:
    """The buffer entry of an event."""
    return format_entry(ev.ts, ev.event_type, ev.item_id)


def decode_entry(raw: str | bytes) -> BufferEntry:
    s = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    ts, et, item = s.split("|", 2)
    return BufferEntry(item, et, int(ts))


def split_entry(raw: bytes) -> tuple[bytes, bytes, bytes]:
    """``(ts, event_type, item_id)`` of a raw entry, still bytes (the hot path's parse).
    Raises ValueError on a malformed entry."""
    ts, et, item = raw.split(b"|", 2)
    return ts, et, item


def entry_item(raw: bytes) -> str:
    """The item id of a raw entry, without building a :class:`BufferEntry`."""
    return split_entry(raw)[2].decode("utf-8")
