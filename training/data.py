"""Datasets, vocabulary and the leave-one-out splits.

Three formats, one typed interface (:class:`Dataset`):

- ``s3``: one user per line, ``user_id item item ...`` in time order (S3-Rec's Beauty.txt).
  Leave-one-out: last item = test target, second-to-last = validation target, training on the
  rest.
- ``gsasrec``: the gSASRec split directory (``train/input.txt``, ``val/input.txt``,
  ``val/output.txt``, ``test/output.txt``). Training on ``train/input.txt``; validation and
  test on the validation users (test input = validation input + validation target).
- ``ml1m-loo-all`` (ours, never comparable with published figures): every line of a gSASRec
  split's ``train/input.txt`` is a user (no user column), leave-one-out as s3: all 6,040 users.
- ``events``: our click events (JSONL, CSV with header ``user_id,item_id,ts,event_type``,
  Parquet, or a directory of ``*.jsonl`` files); sorted per user by ts; leave-one-out as s3.
  Duplicate ``event_id``s (an at-least-once archive) are dropped.
- ``yoochoose``, ``taobao``, ``diginetica``, ``table``: the event logs users bring
  (:mod:`attnrec.training.logs`: the public formats, and any CSV/JSONL with a column and type
  mapping), read into events and split as ``events``.

Event data keeps its users in a canonical order, by (first event time, user id), and its item
vocabulary in the order items first occur there, so the same events give the same dataset
however they were read (an archive of a Kafka topic interleaves its partitions). With
``min_item_support`` > 1 the items with fewer events are left out of the vocabulary (they read
as OOV, the model never recommends them; the worker still records them in the buffers); every
event dataset reports its sparsity (``stats()``: items with one event, median events per item).

Every user is kept as one full time-ordered sequence (items, event types, time-gap buckets);
a split case is ``(user, cut)``: input = the first ``cut`` events, target = event ``cut``.
"""

from __future__ import annotations

import hashlib
import logging
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attnrec.errors import DataError
from attnrec.events import EVENT_TYPES, ClickEvent

from .eventfiles import event_files, read_events
from .features import OOV, PAD, gap_buckets, type_index
from .logs import LOG_FORMATS, LogSpec, log_files, read_log

__all__ = ["FORMATS", "Vocab", "UserSeq", "Dataset", "load_dataset", "read_events", "fingerprint", "sparsity",
           "users_from_events", "dataset_from_events"]

log = logging.getLogger(__name__)

FORMATS = ("s3", "gsasrec", "events", "ml1m-loo-all", *LOG_FORMATS)


@dataclass
class Vocab:
    """Item vocabulary: index 0 = PAD, 1 = OOV, ``items[k]`` has index ``k + 2``."""

    items: list[str]
    event_types: list[str] = field(default_factory=lambda: list(EVENT_TYPES))

    def __post_init__(self) -> None:
        self._index = {item: i + 2 for i, item in enumerate(self.items)}
        if len(self._index) != len(self.items):
            raise DataError("vocabulary has duplicate item ids")

    @property
    def n_items(self) -> int:
        """Vocabulary size counting PAD and OOV (``ModelConfig.n_items``)."""
        return len(self.items) + 2

    def index(self, item_id: str) -> int:
        return self._index.get(item_id, OOV)

    def item_id(self, index: int) -> str | None:
        """The item id of a model index; None for PAD / OOV."""
        return self.items[index - 2] if index >= 2 else None

    def to_dict(self) -> dict[str, Any]:
        return {"items": list(self.items), "event_types": list(self.event_types)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Vocab:
        return cls(items=[str(x) for x in d["items"]], event_types=list(d.get("event_types", EVENT_TYPES)))


@dataclass
class UserSeq:
    """One user's full time-ordered history, as model indices."""

    user_id: str
    items: list[int]
    types: list[int] | None = None  # event-type indices, None when the data has none
    gaps: list[int] | None = None  # time-gap buckets, None when the data has no timestamps
    event_ids: list[str] | None = None  # for the attention analysis on synthetic events


@dataclass
class Dataset:
    name: str
    fmt: str
    vocab: Vocab
    users: list[UserSeq]
    train_len: list[int]  # per user: events [0, train_len) are training data
    val: list[tuple[int, int]]  # (user index, cut): input = events[:cut], target = events[cut]
    test: list[tuple[int, int]]
    fingerprint: str = ""
    files: list[str] = field(default_factory=list)
    #: item content per vocabulary index (training/content.py: ``attach_content``), None without
    content: dict[str, Any] | None = None
    content_info: dict[str, Any] | None = None
    #: how sparse the data is (:func:`sparsity`), counted before ``min_item_support``
    sparsity: dict[str, Any] = field(default_factory=dict)

    @property
    def has_types(self) -> bool:
        return any(u.types is not None for u in self.users)

    @property
    def has_time(self) -> bool:
        return any(u.gaps is not None for u in self.users)

    def split(self, name: str) -> list[tuple[int, int]]:
        if name not in ("val", "test"):
            raise ValueError(f"unknown split {name!r}; use 'val' or 'test'")
        return self.val if name == "val" else self.test

    def stats(self) -> dict[str, Any]:
        lengths = sorted(len(u.items) for u in self.users)
        n = len(lengths)
        return {
            "users": n,
            "items": len(self.vocab.items),
            "interactions": sum(lengths),
            "mean_len": sum(lengths) / max(n, 1),
            "p90_len": lengths[int(0.9 * (n - 1))] if n else 0,
            "val_users": len(self.val),
            "test_users": len(self.test),
            **self.sparsity,
        }


def fingerprint(paths: Sequence[Path]) -> str:
    """sha256 over the names and bytes of the input files (sorted)."""
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        with open(p, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def sparsity(item_counts: Iterable[int], min_item_support: int = 1) -> dict[str, Any]:
    """How sparse a log is, from its events per item: items with one event (count and share),
    the median events per item, and with ``min_item_support`` the items and events it leaves out."""
    counts = sorted(item_counts)
    n, events = len(counts), sum(counts)
    out: dict[str, Any] = {
        "items_seen": n,
        "items_one_event": sum(1 for c in counts if c == 1),
        "share_items_one_event": round(sum(1 for c in counts if c == 1) / max(n, 1), 4),
        "median_events_per_item": (counts[(n - 1) // 2] + counts[n // 2]) / 2 if n else 0,
        "min_item_support": min_item_support,
    }
    if min_item_support > 1:
        rare = [c for c in counts if c < min_item_support]
        out["items_below_support"] = len(rare)
        out["share_events_below_support"] = round(sum(rare) / max(events, 1), 4)
    return out


def holdout_split(users: list[UserSeq], share: float) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """Validation on the last event of a share of the users (at least two events; chosen by a
    hash of the user id, so the same users whatever the order), everything else trained on, no
    test split: for retraining on short sessions, where leave-one-out would hold out two of a
    session's three or four next events."""
    train_len, val = [], []
    cut = int(share * 2**32)
    for u, s in enumerate(users):
        n = len(s.items)
        if n >= 2 and zlib.crc32(s.user_id.encode()) < cut:
            train_len.append(n - 1)
            val.append((u, n - 1))
        else:
            train_len.append(n)
    return train_len, val, []


def _loo(users: list[UserSeq]) -> tuple[list[int], list[tuple[int, int]], list[tuple[int, int]]]:
    """Leave-one-out: last = test, second-to-last = validation; users shorter than 3 train only."""
    train_len, val, test = [], [], []
    for u, s in enumerate(users):
        n = len(s.items)
        if n >= 3:
            train_len.append(n - 2)
            val.append((u, n - 2))
            test.append((u, n - 1))
        else:
            train_len.append(n)
    return train_len, val, test


def _build_vocab(item_seqs: Iterable[Iterable[str]], numeric: bool) -> Vocab:
    seen: dict[str, None] = {}
    for seq in item_seqs:
        for it in seq:
            seen.setdefault(it, None)
    items = list(seen)
    if numeric:
        items.sort(key=int)
    return Vocab(items)


# ---------------------------------------------------------------------------------- s3


def _read_int_lines(path: Path, min_tokens: int) -> list[list[str]]:
    rows = []
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror})") from None
    with f:
        for lineno, line in enumerate(f, 1):
            toks = line.split()
            if not toks:
                continue
            if len(toks) < min_tokens:
                raise DataError(f"{path}:{lineno}: expected at least {min_tokens} ids, got {len(toks)}")
            for t in toks:
                if not t.isdigit():
                    raise DataError(f"{path}:{lineno}: id {t[:40]!r} is not a non-negative integer")
            rows.append(toks)
    return rows


def _load_s3(path: Path, vocab: Vocab | None, fmt: str = "s3") -> Dataset:
    rows = _read_int_lines(path, 2 if fmt == "s3" else 1)
    if fmt != "s3":  # ml1m-loo-all: no user column, the line number is the user
        rows = [[str(i + 1), *r] for i, r in enumerate(rows)]
    seen_users: dict[str, int] = {}
    for i, r in enumerate(rows):
        if r[0] in seen_users:
            raise DataError(f"{path}: user {r[0]!r} appears twice (lines {seen_users[r[0]]} and {i + 1})")
        seen_users[r[0]] = i + 1
    vocab = vocab or _build_vocab((r[1:] for r in rows), numeric=True)
    users = [UserSeq(r[0], [vocab.index(t) for t in r[1:]]) for r in rows]
    tl, val, test = _loo(users)
    ds = Dataset(path.stem if fmt == "s3" else fmt, fmt, vocab, users, tl, val, test, fingerprint([path]), [str(path)])
    ds.sparsity = sparsity(Counter(t for r in rows for t in r[1:]).values())
    return ds


# ---------------------------------------------------------------------------------- gsasrec


def _load_gsasrec(root: Path, vocab: Vocab | None) -> Dataset:
    p_train, p_vin, p_vout, p_tout = (root / "train/input.txt", root / "val/input.txt",
                                      root / "val/output.txt", root / "test/output.txt")
    for p in (p_train, p_vin, p_vout, p_tout):
        if not p.is_file():
            raise DataError(f"{root}: not a gsasrec split directory (missing {p.relative_to(root)})")
    train = _read_int_lines(p_train, 1)
    vin, vout, tout = _read_int_lines(p_vin, 1), _read_int_lines(p_vout, 1), _read_int_lines(p_tout, 1)
    if len(vin) != len(vout):
        raise DataError(f"{p_vout}: {len(vout)} lines but {p_vin} has {len(vin)}")
    if len(tout) != len(train):
        raise DataError(f"{p_tout}: {len(tout)} lines but {p_train} has {len(train)}")
    line_of = {tuple(t): i for i, t in enumerate(train)}
    vocab = vocab or _build_vocab([*train, *vin, *vout, *tout], numeric=True)
    full = [list(t) for t in train]
    train_len = [len(t) for t in train]
    val, test = [], []
    for j, (vi, vo) in enumerate(zip(vin, vout, strict=True)):
        if len(vo) != 1:
            raise DataError(f"{p_vout}:{j + 1}: expected one target item, got {len(vo)}")
        u = line_of.get(tuple(vi[:-1]))
        if u is None:
            raise DataError(f"{p_vin}:{j + 1}: input does not extend any line of {p_train}")
        if len(tout[u]) != 1:
            raise DataError(f"{p_tout}:{u + 1}: expected one target item, got {len(tout[u])}")
        full[u] = vi + vo + tout[u]  # training line + 1 input item + val target + test target
        val.append((u, len(vi)))
        test.append((u, len(vi) + 1))
    users = [UserSeq(str(i + 1), [vocab.index(t) for t in s]) for i, s in enumerate(full)]
    files = [p_train, p_vin, p_vout, p_tout]
    return Dataset(root.name, "gsasrec", vocab, users, train_len, val, test, fingerprint(files), [str(p) for p in files])


# ---------------------------------------------------------------------------------- events


def users_from_events(events: Iterable[ClickEvent]) -> dict[str, list[ClickEvent]]:
    """Group by user, each user's events sorted by ts (stable: ties keep input order), the users
    in the canonical order: by (first event time, user id)."""
    by_user: dict[str, list[ClickEvent]] = {}
    for ev in events:
        by_user.setdefault(ev.user_id, []).append(ev)
    for evs in by_user.values():
        evs.sort(key=lambda e: e.ts)
    return dict(sorted(by_user.items(), key=lambda kv: (kv[1][0].ts, kv[0])))


def item_order(by_user: dict[str, list[ClickEvent]], min_item_support: int = 1) -> tuple[list[str], Counter[str]]:
    """The items of ``by_user`` in the order they first occur (users in their order, each user's
    events in time order) with at least ``min_item_support`` events, and every item's count."""
    counts: Counter[str] = Counter(e.item_id for evs in by_user.values() for e in evs)
    order: dict[str, None] = {}
    for evs in by_user.values():
        for e in evs:
            if counts[e.item_id] >= min_item_support:
                order.setdefault(e.item_id, None)
    return list(order), counts


def dataset_from_events(events: Iterable[ClickEvent], name: str, vocab: Vocab | None = None,
                        fp: str = "", files: list[str] | None = None, min_item_support: int = 1,
                        holdout: float = 0.0) -> Dataset:
    """A dataset of events (users canonical, see the module text); ``vocab`` maps the items (a
    checkpoint's), else a vocabulary of the items with at least ``min_item_support`` events.
    Split leave-one-out, or with ``holdout`` > 0 by :func:`holdout_split`."""
    by_user = users_from_events(events)
    if not by_user:
        raise DataError(f"{name}: no events")
    items, counts = item_order(by_user, min_item_support)
    if vocab is None:
        vocab = Vocab(items)
    users = []
    for uid, evs in by_user.items():
        users.append(UserSeq(
            uid,
            [vocab.index(e.item_id) for e in evs],
            [type_index(e.event_type) for e in evs],
            gap_buckets([e.ts for e in evs], len(evs)),
            [e.event_id for e in evs],
        ))
    tl, val, test = holdout_split(users, holdout) if holdout > 0 else _loo(users)
    ds = Dataset(name, "events", vocab, users, tl, val, test, fp, files or [])
    ds.sparsity = sparsity(counts.values(), min_item_support)
    return ds


def _load_events(path: Path, vocab: Vocab | None, min_item_support: int = 1) -> Dataset:
    files = event_files(path)
    return dataset_from_events(read_events(path), path.stem or path.name, vocab, fingerprint(files), [str(p) for p in files],
                               min_item_support)


def _load_log(path: Path, spec: LogSpec, vocab: Vocab | None, min_item_support: int = 1) -> Dataset:
    files = log_files(path, spec.fmt)
    return dataset_from_events(read_log(path, spec), path.stem or path.name, vocab, fingerprint(files),
                               [str(p) for p in files], min_item_support)


def load_dataset(path: str | Path, fmt: str, vocab: Vocab | None = None, *, spec: LogSpec | None = None,
                 min_item_support: int = 1) -> Dataset:
    """Load ``path`` in format ``fmt`` (s3 | gsasrec | events | ml1m-loo-all, or a log format of
    :mod:`attnrec.training.logs`, read as ``spec`` says). With ``vocab`` (from a checkpoint)
    item ids are mapped through it, unknown ones to OOV; without, event data keeps the items
    with at least ``min_item_support`` events."""
    p = Path(path)
    if fmt == "s3":
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        ds = _load_s3(p, vocab)
    elif fmt == "gsasrec":
        ds = _load_gsasrec(p, vocab)
    elif fmt == "events":
        ds = _load_events(p, vocab, min_item_support)
    elif fmt == "ml1m-loo-all":
        ds = _load_s3(p / "train/input.txt" if p.is_dir() else p, vocab, fmt)
    elif fmt in LOG_FORMATS:
        ds = _load_log(p, spec if spec is not None and spec.fmt == fmt else LogSpec(fmt), vocab, min_item_support)
    else:
        raise DataError(f"unknown data format {fmt!r}; use one of {', '.join(FORMATS)}")
    log.info("loaded %s (%s): %s", p, fmt, ds.stats())
    return ds


assert PAD == 0 and OOV == 1
