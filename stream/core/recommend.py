"""Scores in, recommendations out: one per user, with the popularity fallback for users the
model could not score and the ``because`` explanation from the attention. Pure: no I/O."""

from __future__ import annotations

import time
from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson

from attnrec.events import ClickEvent
from attnrec.manifest import OOV

from .entries import entry_item, split_entry
from .model import LoadedModel

__all__ = ["Rows", "merge_scored", "Recommendation", "recommend"]


@dataclass
class Rows:
    """The scored rows of a batch, whichever graph scored them: what :func:`recommend` reads."""

    users: list[str]
    windows: list[Sequence[bytes]]


def merge_scored(parts: Sequence[tuple[Any, tuple[np.ndarray, ...]]]) -> tuple[Rows, tuple[np.ndarray, ...]]:
    """One set of rows and (top_items, top_scores, attn) from several graphs' (inputs, outputs);
    attention rows of different widths are left-padded with zeros (positions beyond a window)."""
    parts = [(i, o) for i, o in parts if i is not None and i.users]
    width = max((o[2].shape[1] for _, o in parts), default=1)
    rows = Rows([u for i, _ in parts for u in i.users], [w for i, _ in parts for w in i.windows])
    if not parts:
        return rows, (np.zeros((0, 1), np.int64), np.zeros((0, 1), np.float32), np.zeros((0, 1), np.float32))
    attn = [np.pad(o[2], ((0, 0), (width - o[2].shape[1], 0))) for _, o in parts]
    return rows, (np.concatenate([o[0] for _, o in parts]), np.concatenate([o[1] for _, o in parts]),
                  np.concatenate(attn))


@dataclass
class Recommendation:
    """One user's recommendation: its JSON ``payload`` (the ``recs`` schema), plus what stages
    attach on the way: extra record ``headers``, and other sources' ``lists`` for the same
    trigger (source -> (version label, items)) that the online evaluation scores beside it."""

    user_id: str
    payload: dict[str, Any]
    source: int = -1  # the index of its trigger among the batch's records
    headers: list[tuple[str, bytes]] = field(default_factory=list)
    lists: dict[str, tuple[str, list[str]]] = field(default_factory=dict)
    data: bytes = b""  # the payload as JSON, once the stages are done with it

    @property
    def fallback(self) -> bool:
        return bool(self.payload["fallback"])

    @property
    def items(self) -> list[str]:
        return [it["item_id"] for it in self.payload["items"]]

    def to_json(self) -> bytes:
        return orjson.dumps(self.payload)


def _because(window: Sequence[bytes], L: int, attn_row: list[float], order: list[int], k: int) -> list[dict[str, Any]]:
    """The top-``k`` past events by attention. ``window`` holds the row's raw entries newest
    first (position L-1 is ``window[0]``); ``attn_row`` the weights rounded to 4 places;
    ``order`` ranks the row's positions by weight; padding positions carry zero weight and are
    skipped."""
    out: list[dict[str, Any]] = []
    n = len(window)
    for p in order:
        if len(out) >= k:
            break
        j = L - 1 - p  # position -> newest-first index in the window
        w = attn_row[p]
        if j < n and w > 0:
            _, et, item = split_entry(window[j])
            out.append({"item_id": item.decode(), "event_type": et.decode(), "weight": w})
    return out


def recommend(
    model: LoadedModel | None,
    users: Sequence[str],
    raw: Mapping[str, Sequence[bytes]],
    triggers: dict[str, ClickEvent],
    *,
    top_k: int = 10,
    because_k: int = 3,
    exclude_seen: bool = True,
    popularity: Sequence[str] = (),
    now_ms: int | None = None,
    outputs: tuple[np.ndarray, ...] | None = None,
    inputs: Any = None,
    sources: Mapping[str, int] | None = None,
    keep_out: Callable[[str], Container[str]] | None = None,
) -> list[Recommendation]:
    """One recommendation per user. ``outputs`` are the model's (top_items, top_scores, attn)
    for the rows of ``inputs`` (:class:`Rows` or model inputs: ``users``, ``windows``); users
    without a row get the popularity fallback, without the items ``keep_out(user)`` names
    (the stages' exclusions). ``sources``: user -> its trigger's index among the records."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    version = model.version if model is not None else None
    pop = list(model.popularity) if model is not None and model.popularity else list(popularity)
    row_of = {u: r for r, u in enumerate(inputs.users)} if inputs is not None else {}
    if outputs is not None and inputs is not None and inputs.users:
        # one conversion per batch, not per element: numpy scalars and round() are slow in
        # Python loops; PAD/OOV and -inf (excluded) candidates are dropped here, in numpy
        top, scores = outputs[0], outputs[1].astype(np.float64)
        ok = (top > OOV) & np.isfinite(scores)
        top_l, scores_l = top.tolist(), np.round(np.where(ok, scores, 0.0), 4).tolist()
        ok_rows = ok.all(axis=1).tolist()
        ok_l = ok.tolist()
        attn_l = np.round(outputs[2].astype(np.float64), 4).tolist()
        order_l = np.argsort(-outputs[2], axis=1, kind="stable")[:, : max(because_k, 1) + 8].tolist()
        L = outputs[2].shape[1]
    ids = model.item_ids if model is not None else []
    recs: list[Recommendation] = []
    for u in users:
        trig = triggers[u]
        r = row_of.get(u)
        if model is not None and outputs is not None and inputs is not None and r is not None:
            pairs = zip(top_l[r], scores_l[r], strict=True)
            if not ok_rows[r]:
                pairs = ((i, sc) for (i, sc), k in zip(pairs, ok_l[r], strict=True) if k)
            items = [{"item_id": ids[i], "score": sc} for i, sc in pairs][:top_k]
            because = _because(inputs.windows[r], L, attn_l[r], order_l[r], because_k)
            fallback = False
        else:
            seen_u = {entry_item(e) for e in raw.get(u) or ()} if exclude_seen else set()
            out = keep_out(u) if keep_out is not None else ()
            items = [{"item_id": it, "score": 0.0} for it in pop if it not in seen_u and it not in out][:top_k]
            because = []
            fallback = True
        recs.append(
            Recommendation(
                u,
                {
                    "user_id": u,
                    "items": items,
                    "model_version": version,
                    "fallback": fallback,
                    "trigger_event_id": trig.event_id,
                    "event_ts": trig.ts,
                    "emitted_ts": now,
                    "because": because,
                },
                sources[u] if sources is not None else -1,
            )
        )
    return recs
