"""Denoising training: random events inserted into every training batch, and a loss on the
attention they get.

With ``TrainConfig.denoise = q`` (``attnrec train --denoise q``) each training batch is
rebuilt before the forward pass: every slot of a row is, with probability ``q``, a random
catalogue item (uniform over indices ``2 .. n_items-1``, drawn afresh every step from the
training generator) inserted among the row's own events, which keep their order; the row keeps
its width, so its oldest events make room. An inserted event copies the event type and time-gap
bucket of the user's event just before it, and is never a target: every position, inserted or
not, is trained to predict the user's next *own* event (the target of the newest own event at or
before it). Inserted events are never placed before a row's oldest event.

The loss then adds ``denoise_weight`` times the attention mass that falls on the inserted
events (every block, heads averaged, every real query position), so the model learns to look
away from events that do not fit the sequence around them -- a misclick, a bot's hit, an
accidental view -- instead of only learning to live with them. Nothing changes at serving:
the graph, its inputs and the key/value cache are those of the plain model.

    items, types, gaps, targets, inserted = insert_random(items, types, gaps, targets, 0.1, n_items, gen)
    atts = []
    hidden = model(items, types, gaps, attentions=atts)
    loss = ce + weight * attention_on(atts, inserted, items != 0)
"""

from __future__ import annotations

import torch

__all__ = ["insert_random", "attention_on"]


def insert_random(items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor, targets: torch.Tensor, q: float,
                  n_items: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """Rows (B, T), left-padded, with a share ~``q`` of their slots replaced by inserted random
    events (module docstring). Returns the new items, types, gaps and targets (B, T) and the
    inserted-event mask (B, T) bool."""
    assert 0 <= q < 1, f"denoise share must be in [0, 1), got {q}"
    B, T = items.shape
    if q == 0 or T == 0:
        return items, types, gaps, targets, torch.zeros_like(items, dtype=torch.bool)
    W = T + int(q * T / (1 - q)) + 1  # wide enough that the own events rarely run short
    inserted = torch.rand((B, W), generator=gen) < q  # (B, W)
    own = ~inserted
    # own events at or after each slot (inclusive), counted from the newest
    after = own.flip(1).cumsum(1).flip(1)  # (B, W)
    rank = after - own.long()  # own slot: its own rank (0 = newest); inserted slot: the own event before it
    n = (items != 0).sum(1, keepdim=True)  # (B, 1) own events in the row
    real = rank < n  # (B, W): inside the row's events (an inserted slot needs an own event before it)
    src = (T - 1 - rank).clamp(min=0)  # (B, W) column of that own event
    random_items = torch.randint(2, n_items, (B, W), generator=gen)

    def take(x: torch.Tensor) -> torch.Tensor:
        return x.gather(1, src) * real.to(x.dtype)

    new_items = torch.where(inserted, random_items, items.gather(1, src)) * real.to(items.dtype)
    new_types, new_gaps, new_targets = take(types), take(gaps), take(targets)
    mask = inserted & real
    return (new_items[:, -T:], new_types[:, -T:], new_gaps[:, -T:], new_targets[:, -T:], mask[:, -T:])


def attention_on(atts: list[torch.Tensor], inserted: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean attention mass on inserted keys: over blocks, and over the real query positions of
    each block's attention (B, Tq, T) (heads averaged; Tq = 1 for a newest-only block)."""
    if not atts:
        return inserted.new_zeros((), dtype=torch.float32)
    total = inserted.new_zeros((), dtype=torch.float32)
    keys = inserted.unsqueeze(1).float()  # (B, 1, T)
    for att in atts:
        Tq = att.shape[1]
        q_valid = valid[:, -Tq:].float()  # (B, Tq)
        mass = (att * keys).sum(-1)  # (B, Tq)
        total = total + (mass * q_valid).sum() / q_valid.sum().clamp(min=1)
    return total / len(atts)
