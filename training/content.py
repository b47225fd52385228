"""Item content: the optional attribute file of ``attnrec train --items FILE`` and its features.

The file (CSV with a header, or JSONL: one object per line) has one row per item:

    item_id       required, unique
    category      optional text ('' = unknown)
    brand         optional text ('' = unknown)
    price_bucket  optional non-negative integer, or
    price         optional non-negative number, bucketed as 1 + floor(log2(1 + price)) (capped)
    title         optional text

Each item becomes model features (torch-free here; the model's ``ContentEncoder`` embeds them):
category and brand indices (0 = unknown, then the file's values in sorted order), a price
bucket (0 = unknown) and up to ``TITLE_TOKENS`` hashed title tokens: word unigrams and
character 3-grams of the lower-cased title, each hashed with CRC-32 into ``TEXT_BUCKETS - 1``
buckets (0 = padding). The hashing trick needs no vocabulary and downloads nothing, and the
same title gives the same tokens in every process and on every machine.

A pretrained text encoder can plug in instead of (or beside) the hashed n-grams: anything with
``encode(titles) -> float array (n, dim)`` (:class:`TitleEncoder`) gives each item a fixed
title vector (``ModelConfig.text_vec_dim``), which the model projects like the other features.
None is installed or downloaded by attnrec; pass one to :func:`attach_content`.

Items of the file that no event mentions are appended to the vocabulary (*cold items*): they
are scored from their content alone, since their id embedding is masked (``id_mask`` 0 for
every item without a training event).

    table = load_item_attributes("items.csv")     # DataError naming file and line on bad rows
    attach_content(ds, table)                     # grows ds.vocab, sets ds.content
"""

from __future__ import annotations

import csv
import logging
import math
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import orjson

from attnrec.errors import DataError

__all__ = ["ItemAttributes", "ContentTable", "TitleEncoder", "load_item_attributes", "price_bucket",
           "title_tokens", "content_arrays", "attach_content", "TEXT_BUCKETS", "TITLE_TOKENS",
           "N_PRICE_BUCKETS", "COLUMNS", "content_model_fields"]

log = logging.getLogger(__name__)

#: Hash buckets of the title tokens, counting the padding bucket 0.
TEXT_BUCKETS = 4096
#: Title tokens kept per item (words first, then character 3-grams).
TITLE_TOKENS = 48
#: Price buckets counting 0 = unknown: bucket k (k >= 1) holds prices in [2^(k-1) - 1, 2^k - 1).
N_PRICE_BUCKETS = 18
COLUMNS = ("item_id", "category", "brand", "price_bucket", "price", "title")
_WORD = re.compile(r"\w+", re.UNICODE)


class TitleEncoder(Protocol):
    """A pretrained text encoder (e.g. a sentence-transformers model already on disk)."""

    def encode(self, titles: list[str]) -> Any: ...


@dataclass(frozen=True)
class ItemAttributes:
    item_id: str
    category: str = ""
    brand: str = ""
    price_bucket: int = 0  # 0 = unknown
    title: str = ""


@dataclass
class ContentTable:
    """The rows of an attribute file, in file order."""

    rows: dict[str, ItemAttributes]
    path: Path | None = None
    categories: list[str] = field(default_factory=list)
    brands: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.categories:
            self.categories = sorted({r.category for r in self.rows.values() if r.category})
        if not self.brands:
            self.brands = sorted({r.brand for r in self.rows.values() if r.brand})

    def summary(self) -> dict[str, Any]:
        """What a checkpoint's ``content.json`` and a manifest's ``item_content`` record."""
        return {"file": self.path.name if self.path else None, "items": len(self.rows),
                "categories": self.categories, "brands": self.brands, "text_buckets": TEXT_BUCKETS,
                "title_tokens": TITLE_TOKENS, "price_buckets": N_PRICE_BUCKETS,
                "title_hash": "crc32 of 'w:'+word and 'c:'+char 3-gram, lower-cased"}


def price_bucket(price: float) -> int:
    """1 + floor(log2(1 + price)), capped at ``N_PRICE_BUCKETS - 1`` (0 is 'unknown')."""
    return 1 + min(int(math.log2(1.0 + price)), N_PRICE_BUCKETS - 2)


def _hash(token: str, n_buckets: int) -> int:
    return 1 + zlib.crc32(token.encode("utf-8")) % (n_buckets - 1)


def title_tokens(title: str, n_buckets: int = TEXT_BUCKETS, max_tokens: int = TITLE_TOKENS) -> list[int]:
    """Hashed word unigrams then character 3-grams (of ``#word#``) of a title, at most
    ``max_tokens``, each in 1..n_buckets-1; the same title gives the same list everywhere."""
    words = _WORD.findall(title.lower())
    toks = [f"w:{w}" for w in words]
    for w in words:
        padded = f"#{w}#"
        toks += [f"c:{padded[i:i + 3]}" for i in range(len(padded) - 2)]
    return [_hash(t, n_buckets) for t in toks[:max_tokens]]


# ---------------------------------------------------------------------------------- the file


def _row(path: Path, lineno: int, d: dict[str, Any]) -> ItemAttributes:
    where = f"{path} line {lineno}"
    item = d.get("item_id")
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        item = str(item)
    if not isinstance(item, str) or not item.strip():
        raise DataError(f"{where}: item_id is missing or empty")
    texts = {}
    for col in ("category", "brand", "title"):
        v = d.get(col)
        if v is None:
            v = ""
        if not isinstance(v, (str, int, float)) or isinstance(v, bool):
            raise DataError(f"{where}: {col} {v!r} is not text")
        texts[col] = str(v).strip()
    bucket = 0
    raw_b, raw_p = d.get("price_bucket"), d.get("price")
    if raw_b not in (None, ""):
        try:
            b = int(str(raw_b).strip())
        except ValueError:
            raise DataError(f"{where}: price_bucket {raw_b!r} is not a non-negative integer") from None
        if b < 0:
            raise DataError(f"{where}: price_bucket {raw_b!r} is not a non-negative integer")
        bucket = 1 + min(b, N_PRICE_BUCKETS - 2)
    elif raw_p not in (None, ""):
        try:
            p = float(str(raw_p).strip()) if not isinstance(raw_p, bool) else math.nan
        except ValueError:
            raise DataError(f"{where}: price {raw_p!r} is not a number") from None
        if not math.isfinite(p) or p < 0:
            raise DataError(f"{where}: price {raw_p!r} is not a non-negative number")
        bucket = price_bucket(p)
    return ItemAttributes(item.strip(), texts["category"], texts["brand"], bucket, texts["title"])


def _csv_rows(path: Path) -> Any:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if "item_id" not in (reader.fieldnames or []):
            raise DataError(f"{path} line 1: CSV header lacks the item_id column "
                            f"(columns: {', '.join(reader.fieldnames or []) or 'none'})")
        for row in reader:
            if None in row:
                raise DataError(f"{path} line {reader.line_num}: more fields than the header has")
            yield reader.line_num, row


def _jsonl_rows(path: Path) -> Any:
    with open(path, "rb") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                d = orjson.loads(line)
            except orjson.JSONDecodeError:
                raise DataError(f"{path} line {lineno}: not JSON") from None
            if not isinstance(d, dict):
                raise DataError(f"{path} line {lineno}: not a JSON object")
            yield lineno, d


def load_item_attributes(path: str | Path) -> ContentTable:
    """Read an attribute file (``.csv``; anything else is read as JSONL). Raises
    :class:`DataError` naming the file and line of the first malformed row."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such item attribute file")
    rows: dict[str, ItemAttributes] = {}
    first_line: dict[str, int] = {}
    try:
        for lineno, d in (_csv_rows(p) if p.suffix.lower() == ".csv" else _jsonl_rows(p)):
            r = _row(p, lineno, d)
            if r.item_id in rows:
                raise DataError(f"{p} line {lineno}: item_id {r.item_id!r} already on line {first_line[r.item_id]}")
            rows[r.item_id] = r
            first_line[r.item_id] = lineno
    except UnicodeDecodeError as exc:
        raise DataError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if not rows:
        raise DataError(f"{p}: no item rows")
    table = ContentTable(rows, p)
    log.info("item attributes: %d items, %d categories, %d brands from %s", len(rows), len(table.categories),
             len(table.brands), p)
    return table


# ---------------------------------------------------------------------------------- features


def content_arrays(table: ContentTable, items: list[str], warm: set[int] | None = None,
                   encoder: TitleEncoder | None = None) -> dict[str, np.ndarray]:
    """Per vocabulary index (0 = PAD, 1 = OOV, ``items[k]`` at k + 2): ``category``, ``brand``,
    ``price`` (n,) int64, ``title`` (n, TITLE_TOKENS) int64 (0-padded), ``id_mask`` (n,) float32
    (1 for the indices in ``warm``: items with training events; every index when None) and,
    with ``encoder``, ``title_vec`` (n, dim) float32. Items without a row get zeros (unknown)."""
    n = len(items) + 2
    cat_ix = {c: i + 1 for i, c in enumerate(table.categories)}
    brand_ix = {b: i + 1 for i, b in enumerate(table.brands)}
    out = {"category": np.zeros(n, np.int64), "brand": np.zeros(n, np.int64), "price": np.zeros(n, np.int64),
           "title": np.zeros((n, TITLE_TOKENS), np.int64), "id_mask": np.zeros(n, np.float32)}
    for k, item in enumerate(items):
        r = table.rows.get(item)
        if r is None:
            continue
        i = k + 2
        out["category"][i] = cat_ix.get(r.category, 0)
        out["brand"][i] = brand_ix.get(r.brand, 0)
        out["price"][i] = r.price_bucket
        toks = title_tokens(r.title)
        out["title"][i, : len(toks)] = toks
    if warm is None:
        out["id_mask"][2:] = 1.0
    else:
        out["id_mask"][sorted(i for i in warm if i >= 2)] = 1.0
    if encoder is not None:
        titles = [""] * 2 + [table.rows[i].title if i in table.rows else "" for i in items]
        vec = np.asarray(encoder.encode(titles), dtype=np.float32)
        if vec.ndim != 2 or vec.shape[0] != n:
            raise DataError(f"title encoder returned shape {vec.shape}, expected ({n}, dim)")
        vec[:2] = 0.0
        out["title_vec"] = vec
    return out


def attach_content(ds: Any, table: ContentTable, encoder: TitleEncoder | None = None) -> int:
    """Join the attribute table into a :class:`attnrec.training.data.Dataset` in place: items of the
    table that no event mentions are appended to the vocabulary (cold items: existing indices
    keep theirs), and ``ds.content`` / ``ds.content_info`` are set. Returns the number of
    items appended."""
    from .data import Vocab

    known = set(ds.vocab.items)
    cold = [i for i in table.rows if i not in known]
    if cold:
        ds.vocab = Vocab(list(ds.vocab.items) + cold, list(ds.vocab.event_types))
    warm: set[int] = set()
    for s, n_train in zip(ds.users, ds.train_len, strict=True):
        warm.update(s.items[:n_train])
    ds.content = content_arrays(table, ds.vocab.items, warm, encoder)
    missing = sum(1 for i in known if i not in table.rows)
    ds.content_info = {**table.summary(), "cold_items": len(cold), "items_without_attributes": missing,
                       "warm_items": int(ds.content["id_mask"].sum())}
    if table.path is not None:
        ds.content_info["path"] = str(table.path)
    log.info("item content: %d cold items appended (vocabulary now %d), %d event items without attributes",
             len(cold), len(ds.vocab.items), missing)
    return len(cold)


def content_model_fields(info: dict[str, Any], content: dict[str, np.ndarray]) -> dict[str, int]:
    """ModelConfig fields for a dataset with content (vocabulary sizes count 0 = unknown)."""
    vec = content.get("title_vec")
    return {"n_categories": len(info["categories"]) + 1, "n_brands": len(info["brands"]) + 1,
            "n_price_buckets": N_PRICE_BUCKETS, "n_text_buckets": TEXT_BUCKETS, "title_tokens": TITLE_TOKENS,
            "text_vec_dim": int(vec.shape[1]) if vec is not None else 0}
