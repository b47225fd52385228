"""Online, prequential evaluation: does the user's next event hit the top-10 emitted for them?

For every recommendation the worker emits, it remembers the lists each *source* would have
shown that user — ``model`` (what was emitted, labelled by the model version, or ``fallback``),
``trending`` (trending now, minus what the policy excludes) and ``static`` (the manifest's
popularity list, likewise) — and scores them on the user's next positive event (impressions
and skips are not choices): HR@10 (the item is in the list) and NDCG@10 (1 / log2(rank + 2)).
Each user's lists are scored once, by the first event after them. The memory is bounded
(least recently recommended users first out); a user whose partition moved to another worker
is simply not scored there.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from attnrec.events import NEGATIVE_TYPES

__all__ = ["SOURCES", "Score", "OnlineEval", "totals"]

SOURCES = ("model", "trending", "static")
_K = 10


@dataclass(frozen=True, slots=True)
class Score:
    source: str
    version: str
    hit: bool
    ndcg: float


class OnlineEval:
    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._last: OrderedDict[str, dict[str, tuple[str, Sequence[str]]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._last)

    def observe(self, user: str, item: str, event_type: str) -> list[Score]:
        """Score the lists remembered for ``user`` against its next event (and forget them);
        [] when none are remembered or the event is not a choice."""
        if event_type in NEGATIVE_TYPES:
            return []
        lists = self._last.pop(user, None)
        if lists is None:
            return []
        out = []
        for source, (version, items) in lists.items():
            try:
                rank = list(items[:_K]).index(item)
            except ValueError:
                out.append(Score(source, version, False, 0.0))
                continue
            out.append(Score(source, version, True, 1.0 / math.log2(rank + 2)))
        return out

    def remember(self, user: str, lists: dict[str, tuple[str, Sequence[str]]]) -> None:
        """The lists (source -> (version label, items)) shown to ``user`` now."""
        self._last[user] = lists
        self._last.move_to_end(user)
        while len(self._last) > self.capacity:
            self._last.popitem(last=False)


def totals(fields: dict[bytes, bytes]) -> list[dict[str, object]]:
    """Rows {source, version, events, hr@10, ndcg@10} from an online-evaluation hash
    (``<source>|<version>|n``, ``|hits``, ``|ndcg``), most events first."""
    acc: dict[tuple[str, str], dict[str, float]] = {}
    for k, v in fields.items():
        source, version, what = k.decode().rsplit("|", 2) if k.count(b"|") >= 2 else ("", "", "")
        if source:
            acc.setdefault((source, version), {"n": 0.0, "hits": 0.0, "ndcg": 0.0})[what] = float(v)
    rows = [{"source": s, "version": v, "events": int(a["n"]), "hr@10": a["hits"] / a["n"] if a["n"] else None,
             "ndcg@10": a["ndcg"] / a["n"] if a["n"] else None} for (s, v), a in acc.items()]
    return sorted(rows, key=lambda r: (-int(r["events"]), str(r["source"])))  # type: ignore[call-overload]
