"""Session-based nearest neighbours, the baselines that session logs are measured against.

Two published variants over one index of past sessions (a session here is a key's events: a
YOOCHOOSE session, a Taobao user):

- **V-SKNN** (Ludewig & Jannach, "Evaluation of session-based recommendation algorithms",
  UMUAI 2018; session-rec's ``VMContextKNN``): the current session as a vector whose item at
  position ``i`` of ``n`` weighs ``i / n`` (the newest 1); candidate neighbours are the
  ``sample`` most recent past sessions sharing an item with it; similarity = the dot product
  with a neighbour's binary item vector, divided by the session's distinct items; the ``k``
  most similar neighbours vote for their items with their similarity times ``1 / step``, where
  ``step`` is how far back (1 = the newest) the newest item they share with the session is;
  optionally ``(1 + idf_weight * idf)`` per item.
- **VMIS-kNN** (Kersbergen, Sprangers & Schelter, "Serenade - Low-Latency Session-Based
  Recommendation in e-Commerce at Scale", SIGMOD 2022): the index keeps, per item, only the
  ``sample`` most recent sessions holding it; similarity sums the session's position weights
  ``i / n`` over the shared items; the ``k`` most similar (ties: the more recent) vote with their
  similarity times ``max(0, 1 - 0.1 step)`` times the item's idf ``log(sessions / sessions with
  the item)``.

Both keep the ``sample`` most recent sessions per item, which for V-SKNN's "most recent sample
of the candidates" loses nothing: a session among the ``sample`` most recent of the candidates
is among the ``sample`` most recent of each of its items. A session is never its own neighbour
(``exclude_key``). Scores for items of the session itself are kept: the caller's policy decides
whether they may be shown (repeat consumption).

    knn = SessionKNN(VSKNN)
    knn.fit([(key, items, last_ts), ...])
    knn.scores(["a", "b", "c"], exclude_key="s9")   # {item: score}
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["KnnConfig", "VSKNN", "VMIS", "SessionKNN"]


@dataclass(frozen=True)
class KnnConfig:
    name: str
    k: int = 100  # neighbours that vote
    sample: int = 500  # the most recent sessions kept per item (the candidates)
    vmis: bool = False  # VMIS-kNN's similarity and vote (module text); else V-SKNN's
    idf_weight: float = 0.0  # V-SKNN only: each vote times (1 + idf_weight * idf)
    max_len: int = 99  # the newest events of the current session read (Serenade: 99)


VSKNN = KnnConfig("vsknn")
VMIS = KnnConfig("vmis", vmis=True)


class SessionKNN:
    def __init__(self, cfg: KnnConfig) -> None:
        self.cfg = cfg
        self.items_of: dict[str, frozenset[str]] = {}
        self.time_of: dict[str, int] = {}
        self.sessions_of: dict[str, list[str]] = {}  # item -> its most recent sessions, newest first
        self.idf: dict[str, float] = {}

    def fit(self, sessions: Iterable[tuple[str, Sequence[str], int]]) -> SessionKNN:
        """``(key, items in time order, time of the last event)`` of every past session."""
        self.items_of, self.time_of = {}, {}
        holders: dict[str, list[tuple[int, str]]] = {}
        for key, items, last in sessions:
            if not items:
                continue
            s = frozenset(items)
            self.items_of[key], self.time_of[key] = s, last
            for i in s:
                holders.setdefault(i, []).append((last, key))
        n = max(len(self.items_of), 1)
        self.idf = {i: math.log(n / len(h)) for i, h in holders.items()}
        m = self.cfg.sample
        # newest first; equal times: the greater key first (a fixed order)
        self.sessions_of = {i: [k for _, k in heapq.nlargest(m, h)] for i, h in holders.items()}
        return self

    def neighbours(self, items: Sequence[str], exclude_key: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` most similar past sessions to ``items``, most similar first, with similarities."""
        cfg = self.cfg
        items = list(items)[-cfg.max_len:]
        n = len(items)
        pos = {it: (p + 1) / n for p, it in enumerate(items)}  # the newest occurrence's weight
        cands: dict[str, None] = {}
        for it in reversed(items):
            for key in self.sessions_of.get(it, ()):
                cands[key] = None
        cands.pop(exclude_key, None)  # type: ignore[arg-type]
        if not cfg.vmis and len(cands) > cfg.sample:  # V-SKNN: the most recent of the candidates
            cands = dict.fromkeys(heapq.nlargest(cfg.sample, cands, key=lambda c: (self.time_of[c], c)))
        norm = 1.0 if cfg.vmis else float(len(pos))
        scored = []
        for key in cands:
            sim = sum(w for it, w in pos.items() if it in self.items_of[key]) / norm
            if sim > 0:
                scored.append((sim, self.time_of[key], key))
        return [(key, sim) for sim, _, key in heapq.nlargest(cfg.k, scored)]

    def scores(self, items: Sequence[str], exclude_key: str | None = None) -> dict[str, float]:
        """Every candidate item's score for the session ``items`` (time order)."""
        cfg = self.cfg
        recent = list(items)[-cfg.max_len:][::-1]  # newest first
        out: dict[str, float] = {}
        for key, sim in self.neighbours(items, exclude_key):
            held = self.items_of[key]
            step = next((j + 1 for j, it in enumerate(recent) if it in held), None)
            if step is None:
                continue
            decay = max(0.0, 1.0 - 0.1 * step) if cfg.vmis else 1.0 / step
            w = sim * decay
            if w <= 0:
                continue
            for it in held:
                if cfg.vmis:
                    v = w * self.idf[it]
                elif cfg.idf_weight:
                    v = w * (1.0 + cfg.idf_weight * self.idf[it])
                else:
                    v = w
                out[it] = out.get(it, 0.0) + v
        return out
