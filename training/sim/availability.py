"""Which items are available, from catalog events: what the worker's availability state holds,
kept here with its history so a test or the live demo can ask about any past moment (torch-free)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable

from attnrec.events import CatalogEvent

__all__ = ["AvailabilityLog"]


class AvailabilityLog:
    """Availability from catalog events: an item is available iff its last status is
    ``live``, ``on_shelf`` or ``stock`` > 0; an item never mentioned (a video) is available.

    :meth:`apply` events as they come; :meth:`available` answers for now or for a time ``ts``
    (the last status at or before ``ts``; an item's events at one ts count in their order).
    As the worker's store, an event older than the item's last one leaves "now" unchanged.
    """

    def __init__(self, events: Iterable[object] = ()) -> None:
        self._now: dict[str, tuple[int, bool]] = {}  # item -> (ts, available) of its last status
        self._hist: dict[str, tuple[list[int], list[bool]]] = {}  # item -> ts, availability (one per ts)
        for ev in events:
            if isinstance(ev, CatalogEvent):
                self.apply(ev)

    def apply(self, ev: CatalogEvent) -> None:
        ok, item = ev.available, ev.item_id
        if ev.ts >= self._now.get(item, (-1, True))[0]:
            self._now[item] = (ev.ts, ok)
        times, av = self._hist.setdefault(item, ([], []))
        i = bisect.bisect_right(times, ev.ts)
        if i and times[i - 1] == ev.ts:
            av[i - 1] = ok
        else:
            times.insert(i, ev.ts)
            av.insert(i, ok)

    def available(self, item_id: str, ts: int | None = None) -> bool:
        return self.unavailable_since(item_id, ts) is None

    def unavailable_since(self, item_id: str, ts: int | None = None) -> int | None:
        """None if the item is available (now, or at ``ts``), else the ts of the status that
        made it unavailable (the first of an unbroken run of unavailable statuses)."""
        h = self._hist.get(item_id)
        if h is None:
            return None
        times, av = h
        if ts is None:
            last_ts, ok = self._now[item_id]
            if ok:
                return None
            i = bisect.bisect_right(times, last_ts) - 1
        else:
            i = bisect.bisect_right(times, ts) - 1
            if i < 0 or av[i]:
                return None
        while i > 0 and not av[i - 1]:
            i -= 1
        return times[i]

    def items(self) -> set[str]:
        """Every item a catalog event named."""
        return set(self._now)

    def unavailable(self) -> set[str]:
        """The items unavailable now."""
        return {k for k, (_, ok) in self._now.items() if not ok}
