"""The recommendation policy of a deployment: what may be recommended to whom, and in what order.

Pure decisions, no I/O (the settings say which): hard exclusions go into the graph's
``exclude`` input, so the top-K is computed over eligible items only —

- items that are unavailable now (:mod:`attnrec.stream.stages.catalog`), denied by id, or of a denied (or
  not allowed) category: one list for every row;
- per row, with repeats allowed (``EXCLUDE_SEEN=false``, live streams): items the user
  interacted with within ``REPEAT_COOLDOWN_S``, and items skipped (a short view) or shown
  without a click (an impression) within ``NEGATIVE_COOLDOWN_S`` unless a positive event on
  them came later. (With ``EXCLUDE_SEEN=true`` every item of the window is excluded anyway.)
  Ages are in stream time: relative to the user's newest event.

Boosts are added to the scores of the graph's candidates afterwards and reorder them (they
cannot lift an item from outside the graph's top-K: export with a larger ``--top-k`` than is
served to give them room).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from attnrec.events import NEGATIVE_TYPES
from attnrec.manifest import OOV
from attnrec.settings import Settings
from attnrec.units import parse_boosts

from ..core.entries import split_entry
from ..core.model import LoadedModel
from ..core.stage import Batch, Stage
from .catalog import Availability, CatalogStage

__all__ = ["Policy", "pad_rows", "PolicyStage", "BoostStage"]

_NO_CATALOG = Availability()  # without CATALOG: everything available, one object (the memo's key)

_NEGATIVE = frozenset(t.encode() for t in NEGATIVE_TYPES)


def _names(text: str) -> frozenset[str]:
    return frozenset(x.strip() for x in text.split(",") if x.strip())


@dataclass(frozen=True)
class Policy:
    name: str = "default"
    exclude_seen: bool = True
    repeat_cooldown_ms: int = 0
    negative_cooldown_ms: int = 0
    deny_items: frozenset[str] = frozenset()
    allow_categories: frozenset[str] = frozenset()
    deny_categories: frozenset[str] = frozenset()
    boosts: Mapping[tuple[str, str], float] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, s: Settings) -> Policy:
        return cls(s.policy_name, s.exclude_seen, int(1000 * s.repeat_cooldown_s), int(1000 * s.negative_cooldown_s),
                   _names(s.deny_items), _names(s.allow_categories), _names(s.deny_categories), parse_boosts(s.boosts))

    @property
    def has_rules(self) -> bool:
        """Whether anything is kept out besides the user's seen items (boosts aside)."""
        return bool(self.deny_items or self.allow_categories or self.deny_categories or self.scans_rows)

    @property
    def scans_rows(self) -> bool:
        """Whether rows need a cool-down scan (only with repeats allowed: otherwise the whole
        window is excluded already)."""
        return not self.exclude_seen and (self.repeat_cooldown_ms > 0 or self.negative_cooldown_ms > 0)

    def blocked(self, view: Availability) -> set[str]:
        """Items no row may get: unavailable, denied, or of a category the policy rules out."""
        out = set(view.unavailable) | set(self.deny_items)
        if self.allow_categories or self.deny_categories:
            for item, cat in view.category.items():
                if cat in self.deny_categories or (self.allow_categories and cat not in self.allow_categories):
                    out.add(item)
        return out

    def cooldown_items(self, window: Sequence[bytes]) -> list[str]:
        """The items of one newest-first window the policy keeps from this user now."""
        if not window:
            return []
        now = int(split_entry(window[0])[0])
        horizon = max(self.repeat_cooldown_ms if not self.exclude_seen else 0, self.negative_cooldown_ms)
        positive_later: set[bytes] = set()
        out: list[str] = []
        for e in window:
            ts, et, item = split_entry(e)
            age = now - int(ts)
            if age >= horizon:
                break
            if et in _NEGATIVE:
                if age < self.negative_cooldown_ms and item not in positive_later:
                    out.append(item.decode())
            else:
                positive_later.add(item)
                if not self.exclude_seen and age < self.repeat_cooldown_ms:
                    out.append(item.decode())
        return out

    def boost(self, items: list[dict[str, Any]], category: Mapping[str, str]) -> list[dict[str, Any]]:
        """``items`` (item_id, score) with the boosts added and re-sorted by score."""
        if not self.boosts:
            return items
        b = self.boosts
        for it in items:
            add = b.get(("item", it["item_id"]), 0.0)
            cat = category.get(it["item_id"])
            if cat is not None:
                add += b.get(("category", cat), 0.0)
            if add:
                it["score"] = round(it["score"] + add, 4)
        return sorted(items, key=lambda it: -it["score"])


def pad_rows(rows: Iterable[Sequence[int]], n_rows: int) -> np.ndarray:
    """(n_rows, E) int64 of ragged index lists, padded with OOV (always excluded anyway)."""
    rows = list(rows)
    width = max((len(r) for r in rows), default=0) or 1
    out = np.full((n_rows, width), OOV, dtype=np.int64)
    for i, r in enumerate(rows):
        if r:
            out[i, : len(r)] = r
    return out


class PolicyStage(Stage):
    """The deployment's hard rules on the batch path: the blocked items (unavailable with
    ``CATALOG``, denied, of a ruled-out category) for every row, and with repeats allowed each
    row's cool-downs. They go into the graph's ``exclude`` input, so the top-K is over eligible
    items and a recommendation keeps its K items, and into ``batch.blocked`` / ``batch.held``,
    which every other list of the batch (fallbacks, baselines, a candidate's) obeys too."""

    name = "policy"

    def __init__(self, policy: Policy, catalog: CatalogStage | None = None) -> None:
        self.policy = policy
        self.catalog = catalog
        self._key: tuple[Any, ...] = ()
        self._blocked: tuple[frozenset[str], np.ndarray] = (frozenset(), np.zeros(0, dtype=np.int64))

    @property
    def view(self) -> Availability:
        return self.catalog.view if self.catalog is not None else _NO_CATALOG

    def blocked(self, model: LoadedModel | None) -> tuple[frozenset[str], np.ndarray]:
        """The items no row may get, as ids and as ``model``'s indices (memoised per model
        version and availability version)."""
        view = self.view
        key = (model.version if model is not None else None, view.version)
        if key != self._key:
            ids = frozenset(self.policy.blocked(view))
            idx = model.item_index if model is not None else {}
            arr = np.fromiter(sorted({j for i in ids if (j := idx.get(i.encode())) is not None}), dtype=np.int64)
            self._key, self._blocked = key, (ids, arr)
        return self._blocked

    async def begin(self, batch: Batch) -> None:
        batch.blocked = self.blocked(batch.model)[0]
        if self.policy.scans_rows:
            batch.held = self.policy.cooldown_items

    async def rewrite(self, batch: Batch) -> None:
        """Items blocked since ``begin`` (the catalog stage looked again after scoring) leave
        the batch's lists, which then hold one item fewer each, and the later stages' lists obey
        the new set."""
        ids = self.blocked(batch.model)[0]
        if ids is batch.blocked:  # memoised: the same object while nothing changed
            return
        new = ids - batch.blocked
        batch.block(ids)
        if new:
            for rec in batch.recs:
                items = rec.payload["items"]
                if any(it["item_id"] in new for it in items):
                    rec.payload["items"] = [it for it in items if it["item_id"] not in new]

    def exclude(self, batch: Batch, rows: Any) -> np.ndarray | None:
        assert batch.model is not None
        _, glob = self.blocked(batch.model)
        n = len(rows.users)
        parts = []
        if glob.size:
            parts.append(np.broadcast_to(glob, (n, glob.size)))
        if self.policy.scans_rows:
            idx = batch.model.item_index
            cool = [[idx.get(i.encode(), OOV) for i in self.policy.cooldown_items(w)] for w in rows.windows]
            if any(cool):
                parts.append(pad_rows(cool, n))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class BoostStage(Stage):
    """``BOOSTS``: scores added to the model's candidates by item or category, which reorder
    its top-K (they cannot lift an item from outside it)."""

    name = "boosts"

    def __init__(self, policy: Policy, catalog: CatalogStage | None = None) -> None:
        self.policy = policy
        self.catalog = catalog

    async def rewrite(self, batch: Batch) -> None:
        category = self.catalog.view.category if self.catalog is not None else {}
        for rec in batch.recs:
            if not rec.fallback:
                rec.payload["items"] = self.policy.boost(rec.payload["items"], category)
