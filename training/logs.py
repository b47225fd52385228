"""Event logs as users bring them: the public formats read directly, and any CSV or JSONL with a
column mapping, each row a :class:`~attnrec.events.ClickEvent` of the shared schema.

Formats (``--format`` of ``attnrec train``, ``attnrec replay`` and ``attnrec prequential``):

- ``yoochoose``: the session-rec TSV ``SessionId<TAB>ItemId<TAB>Time`` (a header, Time in unix
  seconds with fractions), or the RecSys Challenge 2015 files themselves, without a header:
  ``yoochoose-clicks.dat`` (``session,timestamp,item,category``, an RFC 3339 timestamp) and
  ``yoochoose-buys.dat`` (``session,timestamp,item,price,quantity``: purchases). The session is
  the stream's key (``user_id``); clicks are ``click`` events.
- ``taobao``: Alibaba's UserBehavior CSV ``user_id,item_id,category_id,behavior,timestamp`` (no
  header, unix seconds). Behaviours ``pv``, ``cart``, ``fav``, ``buy`` become ``view``, ``cart``,
  ``like``, ``purchase`` (``--types`` changes that); the category goes to ``context.category``.
- ``diginetica``: the CIKM Cup 2016 item views ``session_id;user_id;item_id;timeframe;eventdate``
  (a header): ``view`` events keyed by the user when known, else by the session; ``timeframe``
  (ms since the session started) is added to the date.
- ``table``: any CSV (a header; the delimiter is sniffed among ``, ; TAB |``) or JSONL file,
  with a column mapping (``--columns user=visitorid,item=itemid,type=event,time=timestamp``;
  ``session=`` instead of ``user=`` keys the stream by session; ``category=`` is optional; for a
  CSV without a header give column numbers, from 0) and a type mapping (``--types
  view=view,addtocart=cart,transaction=purchase``; ``*=TYPE`` maps every other value; without a
  ``type`` column every event is a ``click``). Times: unix seconds or milliseconds (told apart by
  size: below 10^11 they are seconds) or ISO 8601 / RFC 3339 strings (without an offset: UTC);
  ``--time-unit`` fixes one.

A directory is read file by file (sorted by name: the yoochoose-100k directory's training file,
then its test file). Every row becomes an event with a stable id ``<file>:<line>``; a malformed
row or mapping ends the read with one line naming the file, the line and the value
(:class:`~attnrec.errors.DataError`). Rows keep the file's order; :func:`in_time_order` sorts
them by time (stable), as a replay sends them.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from attnrec.errors import DataError
from attnrec.events import KNOWN_EVENT_TYPES, MAX_ID_BYTES, ClickEvent

__all__ = ["LOG_FORMATS", "TIME_UNITS", "TAOBAO_TYPES", "Columns", "LogSpec", "parse_columns", "parse_types",
           "read_log", "log_files", "in_time_order", "time_ms"]

#: The formats of this module (``events``, our own schema, is read by training/data.py).
LOG_FORMATS = ("yoochoose", "taobao", "diginetica", "table")
TIME_UNITS = ("auto", "s", "ms", "iso")
#: Taobao's behaviours as our event types.
TAOBAO_TYPES = {"pv": "view", "cart": "cart", "fav": "like", "buy": "purchase"}
#: Our types a mapping may name, plus ``drop`` (the row is left out).
_TARGETS = frozenset(KNOWN_EVENT_TYPES) | {"other", "drop"}
_ROLES = ("user", "session", "item", "type", "time", "category")


@dataclass(frozen=True)
class Columns:
    """Where a ``table`` file holds each field: a column name, or a position (no header)."""

    user: str
    item: str
    time: str
    type: str | None = None
    category: str | None = None
    by_session: bool = False  # the key column is a session (``session=`` in the mapping)

    @property
    def positional(self) -> bool:
        return all(c is None or c.isdigit() for c in (self.user, self.item, self.time, self.type, self.category))


@dataclass(frozen=True)
class LogSpec:
    """How to read a log: its format, and for ``table`` the column mapping; a type mapping (every
    format but yoochoose); the time unit (``table``)."""

    fmt: str
    columns: Columns | None = None
    types: dict[str, str] = field(default_factory=dict)
    time_unit: str = "auto"

    def __post_init__(self) -> None:
        if self.fmt not in LOG_FORMATS:
            raise DataError(f"unknown log format {self.fmt!r}; use one of {', '.join(LOG_FORMATS)}")
        if self.fmt == "table" and self.columns is None:
            raise DataError("format table needs a column mapping: --columns user=COL,item=COL,time=COL[,type=COL][,category=COL]")
        if self.time_unit not in TIME_UNITS:
            raise DataError(f"unknown time unit {self.time_unit!r}; use one of {', '.join(TIME_UNITS)}")


def parse_columns(spec: str) -> Columns:
    """``user=visitorid,item=itemid,type=event,time=timestamp[,category=cat]`` (``session=`` for
    ``user=``) -> :class:`Columns`; a :class:`DataError` names what is wrong with it."""
    got: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        role, eq, col = (x.strip() for x in part.partition("="))
        if not eq or not col:
            raise DataError(f"column mapping {spec!r}: {part!r} is not ROLE=COLUMN")
        if role not in _ROLES:
            raise DataError(f"column mapping {spec!r}: unknown role {role!r}; roles are {', '.join(_ROLES)}")
        if role in got:
            raise DataError(f"column mapping {spec!r}: {role!r} given twice")
        got[role] = col
    if "user" in got and "session" in got:
        raise DataError(f"column mapping {spec!r}: give user= or session=, not both (the stream's key)")
    missing = [r for r in ("item", "time") if r not in got] + ([] if "user" in got or "session" in got else ["user (or session)"])
    if missing:
        raise DataError(f"column mapping {spec!r}: missing {', '.join(missing)}")
    cols = Columns(got.get("user") or got["session"], got["item"], got["time"], got.get("type"), got.get("category"),
                   by_session="session" in got)
    named = [c for c in (cols.user, cols.item, cols.time, cols.type, cols.category) if c is not None]
    if any(c.isdigit() for c in named) and not cols.positional:
        raise DataError(f"column mapping {spec!r}: use column names (a header) or numbers (no header), not both")
    return cols


def parse_types(spec: str) -> dict[str, str]:
    """``pv=view,fav=like,buy=purchase`` -> {source value: our type}; ``*=TYPE`` for every other
    value, ``=drop`` leaves a value's rows out. Our types: view, click, like, cart, purchase,
    gift, share, impression, skip, other."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        src, eq, dst = (x.strip() for x in part.partition("="))
        if not eq or not src:
            raise DataError(f"type mapping {spec!r}: {part!r} is not VALUE=TYPE")
        if dst not in _TARGETS:
            raise DataError(f"type mapping {spec!r}: {dst!r} is not an event type; use one of "
                            f"{', '.join(sorted(_TARGETS))}")
        out[src] = dst
    return out


def time_ms(value: Any, unit: str = "auto") -> int:
    """Epoch milliseconds from a unix time (seconds or ms, ``unit``; auto: below 10^11 it is
    seconds) or an ISO 8601 string (``iso``; auto when it is not a number). ValueError if not."""
    if isinstance(value, bool) or value is None:
        raise ValueError("not a time")
    if unit == "iso" or (unit == "auto" and isinstance(value, str) and not _numeric(value)):
        s = str(value).strip()
        if s.endswith(("Z", "z")):
            s = s[:-1] + "+00:00"
        t = dt.datetime.fromisoformat(s)
        if t.tzinfo is None:
            t = t.replace(tzinfo=dt.UTC)
        ms = int(round(t.timestamp() * 1000))
    else:
        x = float(value)  # ValueError for text that is no number
        if not math.isfinite(x):
            raise ValueError("not a time")
        ms = int(round(x * 1000)) if unit == "s" or (unit == "auto" and x < 1e11) else int(round(x))
    if ms < 0:
        raise ValueError("before 1970")
    return ms


def _numeric(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


# ------------------------------------------------------------------------------------- files
_SUFFIXES = {"yoochoose": (".txt", ".tsv", ".dat", ".csv"), "taobao": (".csv",), "diginetica": (".csv",),
             "table": (".csv", ".tsv", ".txt", ".jsonl", ".json")}


def log_files(path: Path, fmt: str) -> list[Path]:
    """The files of a log: ``path`` itself, or a directory's files of the format, sorted by name."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _SUFFIXES[fmt] and not p.name.startswith("."))
        if not files:
            raise DataError(f"{path}: directory holds no {fmt} files ({', '.join('*' + s for s in _SUFFIXES[fmt])})")
        return files
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    return [path]


def _check_id(path: Path, lineno: int, what: str, value: Any) -> str:
    v = "" if value is None else str(value).strip()
    if not v:
        raise DataError(f"{path}:{lineno}: {what} is empty")
    if len(v.encode("utf-8")) > MAX_ID_BYTES:
        raise DataError(f"{path}:{lineno}: {what} {v[:40]!r}... is longer than {MAX_ID_BYTES} bytes")
    return v


def _time(path: Path, lineno: int, value: Any, unit: str) -> int:
    try:
        return time_ms(value, unit)
    except (ValueError, TypeError, OverflowError):
        shown = value if not isinstance(value, str) else value[:64]
        raise DataError(f"{path}:{lineno}: time {shown!r} is not "
                        + ("unix seconds or milliseconds, nor an ISO 8601 time" if unit == "auto" else
                           {"s": "unix seconds", "ms": "unix milliseconds", "iso": "an ISO 8601 time"}[unit])) from None


def _type(path: Path, lineno: int, value: Any, types: dict[str, str], default: str) -> str:
    if value is None:
        return default
    v = str(value).strip()
    mapped = types.get(v, types.get("*"))
    if mapped is not None:
        return mapped
    if v in KNOWN_EVENT_TYPES:
        return v
    raise DataError(f"{path}:{lineno}: event type {v[:40]!r} has no mapping; add it to the type mapping "
                    f"(--types {v[:40]}=view, ..., or *=TYPE for every other value)")


def _event(path: Path, lineno: int, user: str, item: str, etype: str, ts: int, context: dict[str, Any] | None = None
           ) -> ClickEvent:
    return ClickEvent(f"{path.name}:{lineno}", user, item, etype, ts, context or {})


def _yoochoose(path: Path, spec: LogSpec) -> Iterator[ClickEvent]:
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        if first.replace("\t", " ").split()[:3] == ["SessionId", "ItemId", "Time"]:
            rows: Iterable[list[str]] = csv.reader(f, delimiter="\t")
            start, tsv = 2, True
        else:  # the challenge's own files: no header, comma-separated, RFC 3339 times
            f.seek(0)
            rows, start, tsv = csv.reader(f), 1, False
        for lineno, row in enumerate(rows, start=start):
            if not row:
                continue
            if tsv:
                if len(row) < 3:
                    raise DataError(f"{path}:{lineno}: expected SessionId, ItemId and Time (tab-separated), got {len(row)} field(s)")
                sid, item, t = row[0], row[1], row[2]
                etype = "click"
            else:
                if len(row) not in (4, 5):
                    raise DataError(f"{path}:{lineno}: expected session,timestamp,item,category (clicks) or "
                                    f"session,timestamp,item,price,quantity (buys), got {len(row)} field(s)")
                sid, t, item = row[0], row[1], row[2]
                etype = "purchase" if len(row) == 5 else "click"
            ts = _time(path, lineno, t, "auto" if tsv else "iso")
            yield _event(path, lineno, _check_id(path, lineno, "session", sid), _check_id(path, lineno, "item", item), etype, ts)


def _taobao(path: Path, spec: LogSpec) -> Iterator[ClickEvent]:
    types = {**TAOBAO_TYPES, **spec.types}
    with open(path, newline="", encoding="utf-8") as f:
        for lineno, row in enumerate(csv.reader(f), start=1):
            if not row:
                continue
            if len(row) != 5:
                raise DataError(f"{path}:{lineno}: expected user_id,item_id,category_id,behavior,timestamp, got {len(row)} field(s)")
            if lineno == 1 and row[4].strip().lower() == "timestamp":
                continue  # a header some copies carry
            etype = _type(path, lineno, row[3], types, "view")
            if etype == "drop":
                continue
            ts = _time(path, lineno, row[4], "s")
            cat = row[2].strip()
            yield _event(path, lineno, _check_id(path, lineno, "user_id", row[0]), _check_id(path, lineno, "item_id", row[1]),
                         etype, ts, {"category": cat} if cat else None)


def _diginetica(path: Path, spec: LogSpec) -> Iterator[ClickEvent]:
    with open(path, newline="", encoding="utf-8") as f:
        rd = csv.reader(f, delimiter=";")
        header = next(rd, None)
        if header is None or [h.strip() for h in header[:3]] not in (["session_id", "user_id", "item_id"],
                                                                      ["sessionId", "userId", "itemId"]):
            raise DataError(f"{path}:1: not a DIGINETICA item-views header (session_id;user_id;item_id;timeframe;eventdate): {header}")
        for lineno, row in enumerate(rd, start=2):
            if not row:
                continue
            if len(row) < 5:
                raise DataError(f"{path}:{lineno}: expected 5 fields (session_id;user_id;item_id;timeframe;eventdate), got {len(row)}")
            sid, uid, item, frame, date = (x.strip() for x in row[:5])
            sid = _check_id(path, lineno, "session_id", sid)
            try:
                day = time_ms(date, "iso")
                offset = int(frame or 0)
            except ValueError:
                raise DataError(f"{path}:{lineno}: timeframe {frame[:40]!r} / eventdate {date[:40]!r}: expected "
                                f"milliseconds and a date (YYYY-MM-DD)") from None
            user = uid if uid and uid != "NA" else f"s{sid}"
            yield _event(path, lineno, user, _check_id(path, lineno, "item_id", item), "view", day + offset, {"session_id": sid})


def _sniff(line: str) -> str:
    counts = {d: line.count(d) for d in (",", ";", "\t", "|")}
    return max(counts, key=lambda d: counts[d]) if any(counts.values()) else ","


def _table_rows(path: Path, cols: Columns) -> Iterator[tuple[int, Any]]:
    """(line, row) of a table file: a dict per JSONL line or per CSV row with a header, a list
    per CSV row without one (positional mapping)."""
    if path.suffix in (".jsonl", ".json"):
        with open(path, "rb") as fb:
            for lineno, raw in enumerate(fb, start=1):
                if not raw.strip():
                    continue
                try:
                    obj = orjson.loads(raw)
                except orjson.JSONDecodeError as exc:
                    raise DataError(f"{path}:{lineno}: not JSON ({exc})") from None
                if not isinstance(obj, dict):
                    raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
                yield lineno, obj
        return
    with open(path, newline="", encoding="utf-8") as f:
        first = f.readline()
        f.seek(0)
        rd = csv.reader(f, delimiter="\t" if path.suffix == ".tsv" else _sniff(first))
        if cols.positional:
            for lineno, row in enumerate(rd, start=1):
                if row:
                    yield lineno, row
            return
        header = next(rd, None) or []
        header = [h.strip() for h in header]
        need = [c for c in (cols.user, cols.item, cols.time, cols.type, cols.category) if c is not None]
        missing = [c for c in need if c not in header]
        if missing:
            raise DataError(f"{path}:1: the header has no column {', '.join(repr(c) for c in missing)} "
                            f"(columns: {', '.join(header)[:200]})")
        for lineno, row in enumerate(rd, start=2):
            if not row:
                continue
            if len(row) != len(header):
                raise DataError(f"{path}:{lineno}: {len(row)} fields, the header has {len(header)}")
            yield lineno, dict(zip(header, row, strict=True))


def _table(path: Path, spec: LogSpec) -> Iterator[ClickEvent]:
    cols = spec.columns
    assert cols is not None
    width = 1 + max(int(c) for c in (cols.user, cols.item, cols.time, cols.type, cols.category) if c is not None) \
        if cols.positional else 0

    def get(lineno: int, row: Any, col: str | None, optional: bool = False) -> Any:
        if col is None:
            return None
        if isinstance(row, list):
            return row[int(col)]
        if col not in row:
            if optional:
                return None
            raise DataError(f"{path}:{lineno}: no field {col!r}")
        return row[col]

    for lineno, row in _table_rows(path, cols):
        if isinstance(row, list) and len(row) < width:
            raise DataError(f"{path}:{lineno}: {len(row)} fields, the column mapping reads field {width - 1}")
        etype = _type(path, lineno, get(lineno, row, cols.type), spec.types, "click") if cols.type else "click"
        if etype == "drop":
            continue
        ts = _time(path, lineno, get(lineno, row, cols.time), spec.time_unit)
        cat = get(lineno, row, cols.category, optional=True)
        ctx = {"category": str(cat)} if cat not in (None, "") else {}
        key = _check_id(path, lineno, "session" if cols.by_session else "user", get(lineno, row, cols.user))
        if cols.by_session:
            ctx["session_id"] = key
        yield _event(path, lineno, key, _check_id(path, lineno, "item", get(lineno, row, cols.item)), etype, ts, ctx)


_READERS = {"yoochoose": _yoochoose, "taobao": _taobao, "diginetica": _diginetica, "table": _table}


def read_log(path: str | Path, spec: LogSpec) -> Iterator[ClickEvent]:
    """The events of a log file or directory in file order (see the module text)."""
    for p in log_files(Path(path), spec.fmt):
        try:
            yield from _READERS[spec.fmt](p, spec)
        except UnicodeDecodeError as exc:
            raise DataError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
        except csv.Error as exc:
            raise DataError(f"{p}: not readable as CSV ({exc})") from None


def in_time_order(events: Iterable[ClickEvent]) -> list[ClickEvent]:
    """The events sorted by time; equal times keep their order (a session's rows, a file's)."""
    return sorted(events, key=lambda e: e.ts)

