"""Full-ranking leave-one-out evaluation: one seeded function, parameterised by split.

A case is (user, cut): the input is the user's first ``cut`` events (the model reads the last
``max_len`` of them), the target is event ``cut``. The scorer ranks the whole catalogue.

Excluded from the ranking (score set to -inf before ranking):

- always: PAD (index 0) and OOV (index 1);
- by default (``keep_history=False``): every item of the user's input -- the whole history
  ``events[:cut]``, not only the model's window. If the target itself occurs in the history it
  is excluded too and ranks after every item left (a certain miss at K < catalogue size); in
  Beauty's S3-Rec file no test or validation target repeats an input item.
- with ``keep_history=True``: nothing else; items the user already had compete as any other.

Rank of the target = number of items with a strictly higher score, plus the number with an
equal score and a lower item index (ties break by item index, lower first, so the figures do
not depend on the sort). HR@K = share of cases with rank < K; NDCG@K = mean of
1/log2(rank + 2) over those cases (one relevant item). Coverage@10 is the fraction of the
catalogue (without PAD/OOV) in at least one case's top-10. No sampled metrics.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .data import Dataset
from .features import left_pad
from .model import AttnRec

__all__ = ["PROTOCOL", "protocol", "rank_metrics", "case_tensors", "evaluate", "model_scorer", "popularity_scorer"]

log = logging.getLogger(__name__)

PROTOCOL = "loo-full-ranking"
#: The protocol name when the user's history is not excluded (``keep_history``).
PROTOCOL_KEEP_HISTORY = "loo-full-ranking-history-kept"


def protocol(keep_history: bool = False) -> dict[str, Any]:
    """The result JSON's ``protocol_detail``: what is excluded and how ties break."""
    return {"name": PROTOCOL_KEEP_HISTORY if keep_history else PROTOCOL, "split": "leave-one-out",
            "ranking": "full catalogue",
            "excluded": ["PAD", "OOV"] + ([] if keep_history else ["every item of the user's input history"]),
            "history": "kept" if keep_history else "excluded",
            "ties": "equal scores rank by item index, lower first"}
Scorer = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def rank_metrics(ranks: Sequence[int] | np.ndarray, ks: Sequence[int] = (10, 20)) -> dict[str, float]:
    """HR@K and NDCG@K from 0-based ranks of the target (0 = top). One relevant item per case."""
    r = np.asarray(ranks, dtype=np.int64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r < k
        out[f"hr@{k}"] = float(hit.mean()) if len(r) else 0.0
        out[f"ndcg@{k}"] = float(np.where(hit, 1.0 / np.log2(r + 2.0), 0.0).mean()) if len(r) else 0.0
    return out


def case_tensors(ds: Dataset, cases: Sequence[tuple[int, int]], max_len: int) -> tuple[torch.Tensor, ...]:
    """(items, types, gaps) LongTensors (B, L), left-padded inputs of the cases."""
    items, types, gaps = [], [], []
    for u, cut in cases:
        s = ds.users[u]
        items.append(left_pad(s.items[:cut], max_len))
        types.append(left_pad(s.types[:cut], max_len) if s.types is not None else [0] * max_len)
        gaps.append(left_pad(s.gaps[:cut], max_len) if s.gaps is not None else [0] * max_len)
    return tuple(torch.tensor(x, dtype=torch.long) for x in (items, types, gaps))


def model_scorer(model: AttnRec) -> Scorer:
    def score(items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        h, _ = model.final_state(items, types, gaps)
        return model.item_scores(h)

    return score


def popularity_scorer(ds: Dataset) -> Scorer:
    """Most-popular baseline: training-event counts (ties: lower index first)."""
    counts = np.zeros(ds.vocab.n_items, dtype=np.float64)
    for s, n in zip(ds.users, ds.train_len, strict=True):
        np.add.at(counts, np.asarray(s.items[:n], dtype=np.int64), 1.0)
    pop = torch.tensor(counts, dtype=torch.float32)

    def score(items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        return pop.unsqueeze(0).expand(items.shape[0], -1)

    return score


@torch.no_grad()
def evaluate(
    scorer: Scorer,
    ds: Dataset,
    split: str,
    max_len: int,
    ks: Sequence[int] = (10, 20),
    batch_size: int = 256,
    max_users: int = 0,
    seed: int = 0,
    return_ranks: bool = False,
    keep_history: bool = False,
) -> dict[str, Any]:
    """Metrics of ``scorer`` on ``split`` ('val' or 'test'); exclusions and ties as in the
    module docstring (``keep_history``: do not exclude the user's input items).

    ``max_users`` > 0 evaluates a seeded random subset of that many cases (used only for
    per-epoch validation on big data; reported results use all cases). ``return_ranks`` adds
    each case's rank and user id (``ranks``, ``user_ids``), from which
    :mod:`attnrec.training.stats` computes intervals and paired comparisons.
    """
    cases = list(ds.split(split))
    if max_users and len(cases) > max_users:
        rng = np.random.default_rng(seed)
        pick = np.sort(rng.choice(len(cases), size=max_users, replace=False))
        cases = [cases[i] for i in pick]
    n_items = ds.vocab.n_items
    ranks = np.zeros(len(cases), dtype=np.int64)
    covered = torch.zeros(n_items, dtype=torch.bool)
    item_idx = torch.arange(n_items)
    for b0 in range(0, len(cases), batch_size):
        batch = cases[b0 : b0 + batch_size]
        items, types, gaps = case_tensors(ds, batch, max_len)
        scores = scorer(items, types, gaps).float().clone()  # (B, n_items)
        assert scores.shape == (len(batch), n_items), f"scorer returned {tuple(scores.shape)}"
        scores[:, :2] = -math.inf  # PAD, OOV
        targets = torch.tensor([ds.users[u].items[cut] for u, cut in batch], dtype=torch.long)
        if not keep_history:
            # the user's whole input history, not only the window (padded with PAD, masked anyway)
            width = max(cut for _, cut in batch)
            seen = torch.tensor([ds.users[u].items[:cut] + [0] * (width - cut) for u, cut in batch], dtype=torch.long)
            scores.scatter_(1, seen, -math.inf)
        t = scores.gather(1, targets.unsqueeze(1))  # (B, 1)
        better = (scores > t) | ((scores == t) & (item_idx.unsqueeze(0) < targets.unsqueeze(1)))
        ranks[b0 : b0 + len(batch)] = better.sum(1).numpy()
        top = torch.topk(scores, k=min(10, n_items - 2), dim=1).indices
        covered[top.flatten()] = True
    covered[:2] = False
    out: dict[str, Any] = rank_metrics(ranks, ks)
    out["coverage@10"] = float(covered.sum().item() / max(n_items - 2, 1))
    out["users"] = len(cases)
    if return_ranks:  # per-user results: the bootstrap intervals and paired comparisons (training/stats.py)
        out["ranks"] = ranks.tolist()
        out["user_ids"] = [ds.users[u].user_id for u, _ in cases]
    return out
