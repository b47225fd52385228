"""Seeded noise injection: random items inserted into every user's history, targets untouched.

For a noise level ``p`` in [0, 1), each user's *training events* (``events[:train_len]``, the
events before the validation target; for the gSASRec split, the training line) get
``k = round(p * n / (1 - p))`` extra events, so that injected events are a share ``p`` of the
noisy training events (within rounding). Each injected item is drawn uniformly from the
catalogue (indices ``2 .. n_items-1``: never PAD or OOV); the injected positions are a uniform
random subset of the noisy sequence's slots, and the user's own events keep their order.

Nothing after ``train_len`` is touched: the validation and test targets (and, for gSASRec, the
input item between the training line and the validation target) stay the same items, in the
same order, at the end of the sequence; only their cuts move by ``k``. The validation input
and the test input are therefore noisy too (they are prefixes of the noisy sequence).

An injected event copies the event type and time-gap bucket of a random event of the same
user's training events (so neither feature tells it apart), and gets the event id
``noise-<user>-<j>``. Everything is drawn from one ``numpy`` generator seeded by ``seed``, in
user order: the same (dataset, p, seed) gives the same noisy dataset.

    noisy, info = inject_noise(ds, 0.2, seed=42)
    info.injected[u]          # sorted indices of user u's injected events in noisy.users[u].items
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .data import Dataset, UserSeq

__all__ = ["NoiseInfo", "inject_noise", "n_injected", "injected_mask"]

log = logging.getLogger(__name__)

#: Mixed into the seed so the noise stream differs from training's stream of the same seed.
_SALT = 0x5EED_0015E


@dataclass
class NoiseInfo:
    """What :func:`inject_noise` did: per user, the sorted positions of injected events in the
    noisy sequence."""

    p: float
    seed: int
    injected: list[list[int]] = field(default_factory=list)

    @property
    def n_injected(self) -> int:
        return sum(len(x) for x in self.injected)

    def summary(self, ds: Dataset) -> dict[str, Any]:
        """The result JSON's ``noise`` block (``ds``: the noisy dataset)."""
        train_events = sum(ds.train_len)
        return {"p": self.p, "seed": self.seed, "injected_events": self.n_injected,
                "noisy_training_events": train_events,
                "injected_share": round(self.n_injected / max(train_events, 1), 6),
                "where": "inserted among each user's training events (also the val/test input); "
                         "val/test targets untouched, still last"}


def n_injected(n: int, p: float) -> int:
    """Events to insert among ``n`` so that they are a share ``p`` of the ``n + k`` (rounded)."""
    if not 0 <= p < 1:
        raise ValueError(f"noise level must be in [0, 1), got {p}")
    return int(round(p * n / (1 - p))) if n else 0


def inject_noise(ds: Dataset, p: float, seed: int) -> tuple[Dataset, NoiseInfo]:
    """A copy of ``ds`` with a share ``p`` of random items inserted into every user's training
    events (module docstring); ``ds`` itself is not modified."""
    rng = np.random.default_rng([seed, _SALT])
    info = NoiseInfo(p=p, seed=seed)
    users: list[UserSeq] = []
    shift: list[int] = []
    lo_item, hi_item = 2, ds.vocab.n_items  # uniform over real items: never PAD (0) or OOV (1)
    for u, (s, n) in enumerate(zip(ds.users, ds.train_len, strict=True)):
        k = n_injected(n, p)
        total = n + k
        pos = np.sort(rng.choice(total, size=k, replace=False)) if k else np.zeros(0, dtype=np.int64)
        noise_items = rng.integers(lo_item, hi_item, size=k)
        donors = rng.integers(0, n, size=k) if k else np.zeros(0, dtype=np.int64)  # whose type/gap to copy
        is_noise = np.zeros(total, dtype=bool)
        is_noise[pos] = True
        own_at = np.cumsum(~is_noise) - 1  # at an own slot: the index of the user's own event
        noise_at = np.cumsum(is_noise) - 1  # at an injected slot: which injected event
        items = _merge(s.items, n, is_noise, own_at, noise_at, [int(x) for x in noise_items])
        types = _merge(s.types, n, is_noise, own_at, noise_at, [s.types[d] for d in donors] if s.types else [])
        gaps = _merge(s.gaps, n, is_noise, own_at, noise_at, [s.gaps[d] for d in donors] if s.gaps else [])
        ids = _merge(s.event_ids, n, is_noise, own_at, noise_at, [f"noise-{u}-{j}" for j in range(k)])
        users.append(UserSeq(s.user_id, items or [], types, gaps, ids))  # type: ignore[arg-type]
        info.injected.append(pos.astype(int).tolist())
        shift.append(k)
    noisy = dataclasses.replace(  # every other field (vocabulary, item content, files) is shared
        ds, name=f"{ds.name}+noise{p:g}", users=users,
        train_len=[n + k for n, k in zip(ds.train_len, shift, strict=True)],
        val=[(u, cut + shift[u]) for u, cut in ds.val], test=[(u, cut + shift[u]) for u, cut in ds.test])
    log.info("noise p=%g seed=%d: %d events inserted among %d training events", p, seed, info.n_injected,
             sum(noisy.train_len))
    return noisy, info


def _merge(xs: list[Any] | None, n: int, is_noise: np.ndarray, own_at: np.ndarray, noise_at: np.ndarray,
           noise: list[Any]) -> list[Any] | None:
    """``xs[:n]`` with ``noise`` at the injected slots, then ``xs[n:]`` unchanged."""
    if xs is None:
        return None
    head = [noise[int(noise_at[t])] if is_noise[t] else xs[int(own_at[t])] for t in range(len(is_noise))]
    return head + list(xs[n:])


def injected_mask(info: NoiseInfo, cases: list[tuple[int, int]], width: int) -> np.ndarray:
    """(B, width) bool: which of each case's last ``width`` input events (left-padded, as the
    model reads them) were injected; False on padding."""
    out = np.zeros((len(cases), width), dtype=bool)
    for r, (u, cut) in enumerate(cases):
        for pos in info.injected[u]:
            off = pos - cut + width  # column of position pos when events[:cut] is right-aligned
            if pos < cut and 0 <= off < width:
                out[r, off] = True
    return out
