"""The trained methods of the prequential evaluation (training/prequential.py): the attention
model and GRU4Rec, fitted by :func:`attnrec.training.retrain.retrain_events` exactly as the
periodic trainer fits them, and scored on each request the way the worker scores a user.

What the worker does, and so what this does (stream/core/inputs.py, recommend.py):

- the model reads the user's newest ``history_len`` events (items the model does not know are
  OOV; the oldest event's time gap is taken from the event before it when there is one);
- a user whose window holds no item the model knows gets the fallback: trending now minus what
  the policy keeps out, or, if that is empty, the model's static popularity list (its top 100
  training items) likewise;
- with seen items excluded the items of the newest ``exclude_window`` events are out of the
  ranking; PAD and OOV always are.

``gated``: a retrained model serves only if :func:`~attnrec.training.retrain.gate_decision`
promotes it against the serving one (a first one against the popularity fallback); else the
serving one stays, and the next retrain starts from it, as the trainer's does from ``CURRENT``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from .features import OOV, gap_buckets, type_index
from .prequential import POLICIES, Context, Method, Stream, _pick
from .retrain import Previous, gate_decision, retrain_events

__all__ = ["Neural"]

log = logging.getLogger(__name__)


class Neural(Method):
    """``arch`` (attention, gru4rec) retrained every period (``refit``) or only on the first."""

    def __init__(self, name: str, arch: str = "attention", *, refit: bool = True, gated: bool = False, epochs: int = 30,
                 threads: int = 1, min_item_support: int = 1, margin: float = 0.02, seed: int | None = None,
                 batch: int = 512, memo: dict[Any, Any] | None = None, holdout: float = 0.0) -> None:
        self.name, self.arch, self.refit, self.gated = name, arch, refit, gated
        self.holdout = holdout
        self.memo = memo  # shared by the methods of a run: a first fit from scratch is the same for all of them
        self.epochs, self.threads, self.min_item_support, self.margin, self.seed = epochs, threads, min_item_support, margin, seed
        self.batch = batch
        self.serving: dict[str, Any] | None = None  # model, vocab map, static list, val figure
        self.previous: Previous | None = None
        self._report: dict[str, Any] = {}
        self.last_sources: np.ndarray | None = None
        self.fits = 0

    def report(self) -> dict[str, Any]:
        return self._report

    def fit(self, stream: Stream, upto: int, t_ms: int, ctx: Context) -> None:
        import torch

        from .checkpoint import popularity

        key = (self.arch, upto, self.epochs, self.min_item_support, self.seed, self.holdout) if self.previous is None else None
        out = self.memo.get(key) if self.memo is not None and key is not None else None
        if out is None:
            out = retrain_events(stream.events[:upto], self.arch, self.previous, epochs=self.epochs, threads=self.threads,
                                 min_item_support=self.min_item_support, arch=self.arch, seed=self.seed,
                                 holdout=self.holdout)
            if self.memo is not None and key is not None:
                self.memo[key] = out
        self.fits += 1
        m = out.metrics
        val, pop = m["val"]["ndcg@10"], m["val_popular"]["ndcg@10"]
        current = self.serving["val_ndcg"] if self.serving is not None else None
        ok, reason = gate_decision(val, current, self.margin, pop if current is None else None) if self.gated \
            else (True, "not gated")
        self._report = {"val_ndcg@10": round(val, 5), "val_hr@10": round(m["val"]["hr@10"], 5),
                        "val_popular_ndcg@10": round(pop, 5), "best_epoch": m["best_epoch"], "epochs_run": m["epochs_run"],
                        "train_cpu_seconds": m["train_cpu_seconds"], "warm_start": out.warm_start,
                        "items": len(out.ds.vocab.items), "decision": "served" if ok else "rejected", "reason": reason}
        log.info("prequential: %s retrained on %d events: %s", self.name, upto, self._report)
        if not ok:
            return
        index = {it: i for i, it in enumerate(stream.items)}
        vocab = out.ds.vocab
        g2v = np.full(len(stream.items), OOV, dtype=np.int64)
        v2g = np.full(vocab.n_items, -1, dtype=np.int64)
        for k, it in enumerate(vocab.items):
            g = index.get(it)
            if g is not None:
                g2v[g], v2g[k + 2] = k + 2, g
        model = out.model.eval()
        torch.set_num_threads(self.threads)
        self.serving = {"model": model, "g2v": g2v, "v2g": v2g, "val_ndcg": val,
                        "static": [index[i] for i in popularity(out.ds) if i in index]}
        self.previous = Previous(model, {"model": model.cfg.to_dict()}, vocab.to_dict())

    def _inputs(self, stream: Stream, reqs: list[int], H: int, g2v: np.ndarray) -> tuple[np.ndarray, ...]:
        items = np.zeros((len(reqs), H), dtype=np.int64)
        types = np.zeros_like(items)
        gaps = np.zeros_like(items)
        for r, e in enumerate(reqs):
            hist = stream.history(e, H + 1)  # one more: the oldest kept event's gap
            ts = stream.ts[hist].tolist()
            g = gap_buckets(ts, len(ts))
            hist, g = hist[-H:], g[-H:]
            k = len(hist)
            items[r, H - k:] = g2v[stream.item[hist]]
            types[r, H - k:] = [type_index(stream.events[i].event_type) for i in hist.tolist()]
            gaps[r, H - k:] = g
        return items, types, gaps

    def lists(self, stream: Stream, reqs: np.ndarray, n: int, ctx: Context) -> dict[str, np.ndarray]:
        import torch

        out = {p: np.full((len(reqs), n), -1, dtype=np.int64) for p in POLICIES}
        src = np.zeros(len(reqs), dtype=np.int8)
        sv = self.serving
        rl = reqs.tolist()
        if sv is not None:
            model, g2v, v2g = sv["model"], sv["g2v"], sv["v2g"]
            cfg = model.cfg
            H = cfg.history_len
            for b0 in range(0, len(rl), self.batch):
                part = rl[b0:b0 + self.batch]
                items, types, gaps = self._inputs(stream, part, H, g2v)
                if not cfg.n_event_types:
                    types[:] = 0
                if not cfg.n_gap_buckets:
                    gaps[:] = 0
                known = (items > OOV).any(1)
                rows = np.flatnonzero(known)
                if not len(rows):
                    continue
                with torch.no_grad():
                    h, _ = model.final_state(*(torch.from_numpy(x[rows]) for x in (items, types, gaps)))
                    scores = model.item_scores(h).float()
                scores[:, :2] = -np.inf
                k = min(n, scores.shape[1])
                for p in ("allowed", "excluded"):  # allowed first: excluding masks the scores
                    if p == "excluded":
                        for j, r in enumerate(rows.tolist()):  # the newest exclude_window events' items
                            seen = g2v[ctx.seen(stream, part[r])]
                            scores[j, seen[seen > OOV]] = -np.inf
                    top = torch.topk(scores, k, dim=1)
                    got = np.where(torch.isfinite(top.values).numpy(), v2g[top.indices.numpy()], -1)
                    out[p][b0 + rows, :k] = got
                src[b0 + rows] = 1
        static = sv["static"] if sv is not None else []
        for r in np.flatnonzero(src == 0).tolist():  # the fallback: trending now, else the static list
            e = rl[r]
            trend = ctx.trending.at(e)
            for p in POLICIES:
                ban = ctx.seen(stream, e) if p == "excluded" else None
                row = _pick(trend, n, ban) or _pick(static, n, ban)
                out[p][r, :len(row)] = row
        self.last_sources = src
        return out
