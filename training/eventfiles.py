"""Files of our own event schema (:mod:`attnrec.events`): JSONL, CSV with a header
``user_id,item_id,ts[,event_type][,event_id]``, Parquet with those columns, or a directory of
them; what the periodic trainer archives and ``attnrec train --format events`` reads. A
malformed row ends the read with one line naming the file and the line."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from attnrec.errors import DataError, InvalidEventError
from attnrec.events import ClickEvent, event_from_dict

__all__ = ["read_events", "event_files"]

log = logging.getLogger(__name__)


def _events_jsonl(path: Path) -> Iterable[ClickEvent]:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield event_from_dict(orjson.loads(line))
            except orjson.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not JSON ({exc})") from None
            except InvalidEventError as exc:
                raise DataError(f"{path}:{lineno}: {exc}") from None


_CSV_COLUMNS = ("user_id", "item_id", "ts")


def _csv_event(path: Path, lineno: int, row: dict[str, Any], n: int) -> ClickEvent:
    d = {k: row.get(k) for k in (*_CSV_COLUMNS, "event_type", "event_id")}
    d["event_type"] = d["event_type"] or "click"
    d["event_id"] = d["event_id"] or f"{path.name}:{n}"
    ts = d["ts"]
    if isinstance(ts, str) and ts.strip().lstrip("-").isdigit():
        d["ts"] = int(ts)
    try:
        return event_from_dict(d)
    except InvalidEventError as exc:
        raise DataError(f"{path}:{lineno}: {exc}") from None


def _events_csv(path: Path) -> Iterable[ClickEvent]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in _CSV_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}:1: CSV header lacks column(s) {', '.join(missing)}")
        for n, row in enumerate(reader):
            if None in row:
                raise DataError(f"{path}:{reader.line_num}: more fields than the header has")
            yield _csv_event(path, reader.line_num, row, n)


def _events_parquet(path: Path) -> Iterable[ClickEvent]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise DataError(f"{path}: not a readable Parquet file ({exc})") from None
    missing = [c for c in _CSV_COLUMNS if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: Parquet file lacks column(s) {', '.join(missing)}")
    for n, row in enumerate(table.to_pylist()):
        ts = row.get("ts")
        if hasattr(ts, "timestamp"):  # a pyarrow timestamp column
            row["ts"] = int(ts.timestamp() * 1000)
        yield _csv_event(path, n + 1, {k: (None if v is None else v) for k, v in row.items()}, n)


def event_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json", ".csv", ".parquet"))
        if not files:
            raise DataError(f"{path}: directory holds no *.jsonl, *.csv or *.parquet files")
        return files
    if not path.exists():
        raise DataError(f"{path}: no such file or directory")
    return [path]


def read_events(path: str | Path) -> list[ClickEvent]:
    """All events of a file or directory (JSONL / CSV / Parquet), duplicates by event_id dropped."""
    out: list[ClickEvent] = []
    seen: set[str] = set()
    dups = 0
    for p in event_files(Path(path)):
        if p.suffix == ".csv":
            it = _events_csv(p)
        elif p.suffix == ".parquet":
            it = _events_parquet(p)
        else:
            it = _events_jsonl(p)
        for ev in it:
            if ev.event_id in seen:
                dups += 1
                continue
            seen.add(ev.event_id)
            out.append(ev)
    if dups:
        log.info("dropped %d duplicate events (same event_id) from %s", dups, path)
    return out
