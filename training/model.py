"""AttnRec: SASRec-family causal self-attention over a user's recent events, in one file.

Inputs are three LongTensors of shape (B, L), LEFT-padded with 0 so the newest event is at
position L-1 (see ``training/features.py`` for the vocabularies):

    items  item indices      (0 = PAD, 1 = OOV, 2.. real items)
    types  event-type index  (0 = PAD / not used)
    gaps   time-gap bucket   (0 = PAD / unknown / not used)

Positions come in one of two ways (``ModelConfig.positions``):

- "absolute" (SASRec's): embedding of position i = item + position(distance from the end,
  newest = 0) [+ type] [+ gap]; causal attention over the last ``max_len`` events. Every new
  event shifts every position, so the whole window is recomputed per event.
- "relative" (cacheable, the default of new models): embedding = item [+ type] [+ gap], and each
  block adds a learned bias per head and query-key distance (0..L-1) to the attention logits,
  with a band mask: a query sees the last L = ``max_len`` events, itself included. An event's
  keys and values at every layer are then fixed once it has arrived, so serving keeps them per
  user and scores a new event with one query per layer (:meth:`AttnRec.step`). Its layer-k
  state depends on up to k*(L-1) earlier events, so the full graph reads
  ``history_len = n_blocks*(L-1)+1`` events and training uses rows long enough for that.

Blocks use hand-written masked attention (a large finite negative instead of -inf, so fully
padded rows never produce NaN and the graph exports to ONNX with dynamic batch and sequence
length) in one of two layouts (``ModelConfig.block``):

    "pre_ln":  x = x + Attn(LN1(x) -> LN1(x));    x = x + FFN(LN2(x))           (GELU FFN)
    "sasrec":  q = LN1(x); x = q + Attn(q -> x);  f = LN2(x); x = f + FFN(f)    (ReLU FFN)

"sasrec" is the block of the SASRec authors' code (and of RecTools' SASRec): the query is
normalised, keys and values are not, and the residuals start from the normalised tensors.
Scores are the final hidden state dotted with the (tied) item embeddings. The configuration,
:class:`ModelConfig`, is declared in ``training/config.py`` with its defaults (torch-free: the
settings and the command line read its fields).

With item content (``ModelConfig.has_content``; ``training/content.py``) an item's vector is its
id embedding (masked for cold items and, in training, by id-dropout) plus a content vector
(:class:`ContentEncoder`); :meth:`AttnRec.item_table` is then the input and output table, and
:meth:`AttnRec.materialised` bakes it into a plain model for export.

    hidden = model(items, types, gaps)            # (B, T, d), training: every position
    h, attn = model.final_state(items, types, gaps)  # (B, d), (B, L): inference, newest only
    h, attn, cache, n = model.final_state(items, types, gaps, with_cache=True)  # + (B, blocks, 2, L-1, d), (B,)
    h, attn, new_kv = model.step(item, type, gap, cache, n)  # one new event per row: (B, d), (B, L), (B, blocks, 2, d)
    scores = model.item_scores(h)                 # (B, n_items)
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn

from .config import BLOCKS, POSITIONS, ModelConfig

__all__ = ["ModelConfig", "AttnRec", "MASK_VALUE", "BLOCKS", "POSITIONS"]

#: Added to masked attention logits. Finite so a fully masked row gives zeros, not NaN.
MASK_VALUE = -1e9


class ContentEncoder(nn.Module):
    """Item content -> one d-vector per item: category + brand + price-bucket embeddings + the
    mean of the title's hashed n-gram embeddings (+ a pretrained title vector, projected),
    through one linear map without bias, so an item with no content gets the zero vector.

    The per-item features are buffers indexed by vocabulary index (saved with the weights):
    ``f_category``, ``f_brand``, ``f_price`` (n_items,), ``f_title`` (n_items, title_tokens),
    ``f_title_vec`` (n_items, text_vec_dim) and ``id_mask`` (n_items,): 1 for items with
    training events, 0 for cold items, whose id embedding is never used."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        d, n = cfg.d_model, cfg.n_items
        self.category = nn.Embedding(max(cfg.n_categories, 1), d, padding_idx=0)
        self.brand = nn.Embedding(max(cfg.n_brands, 1), d, padding_idx=0)
        self.price = nn.Embedding(max(cfg.n_price_buckets, 1), d, padding_idx=0)
        self.text = nn.Embedding(max(cfg.n_text_buckets, 1), d, padding_idx=0)
        self.title_vec = nn.Linear(cfg.text_vec_dim, d, bias=False) if cfg.text_vec_dim else None
        self.proj = nn.Linear(d, d, bias=False)
        self.register_buffer("f_category", torch.zeros(n, dtype=torch.long))
        self.register_buffer("f_brand", torch.zeros(n, dtype=torch.long))
        self.register_buffer("f_price", torch.zeros(n, dtype=torch.long))
        self.register_buffer("f_title", torch.zeros(n, max(cfg.title_tokens, 1), dtype=torch.long))
        self.register_buffer("f_title_vec", torch.zeros(n, max(cfg.text_vec_dim, 1)))
        self.register_buffer("id_mask", torch.ones(n))

    def set_features(self, arrays: dict[str, Any]) -> None:
        """Fill the buffers from :func:`attnrec.training.content.content_arrays`."""
        with torch.no_grad():
            for key, buf in (("category", self.f_category), ("brand", self.f_brand), ("price", self.f_price),
                             ("title", self.f_title), ("title_vec", self.f_title_vec), ("id_mask", self.id_mask)):
                if key in arrays:
                    t = torch.as_tensor(arrays[key])
                    assert t.shape == buf.shape, f"content {key}: shape {tuple(t.shape)} != {tuple(buf.shape)}"
                    buf.copy_(t)

    def forward(self, idx: torch.Tensor | None = None) -> torch.Tensor:
        """Content vectors of the item indices ``idx`` (any shape) -> (.., d); every item's (n_items, d) when None."""
        def pick(buf: torch.Tensor) -> torch.Tensor:
            return buf if idx is None else buf[idx]

        title = pick(self.f_title)  # (.., T)
        n_tok = (title != 0).sum(-1, keepdim=True).clamp(min=1).to(self.proj.weight.dtype)
        x = (self.category(pick(self.f_category)) + self.brand(pick(self.f_brand)) + self.price(pick(self.f_price))
             + self.text(title).sum(-2) / n_tok)
        if self.title_vec is not None:
            x = x + self.title_vec(pick(self.f_title_vec))
        return self.proj(x)


class SelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_heads = cfg.n_heads
        self.q = nn.Linear(cfg.d_model, cfg.d_model)
        self.k = nn.Linear(cfg.d_model, cfg.d_model)
        self.v = nn.Linear(cfg.d_model, cfg.d_model)
        self.proj = nn.Linear(cfg.d_model, cfg.d_model)
        self.attn_drop = nn.Dropout(cfg.dropout)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, xq: torch.Tensor, xkv: torch.Tensor, allowed: torch.Tensor,
                bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """xq (B, Lq, d) attends to xkv (B, L, d) where allowed (B, Lq, L) is True, with an
        optional additive bias (H, Lq, L) on the logits.

        Returns the output (B, Lq, d), the attention weights (B, H, Lq, L) (rows with no allowed
        key are all zeros) and the keys and values (B, L, d) it used.
        """
        return self.attend(xq, self.k(xkv), self.v(xkv), allowed, bias)

    def attend(self, xq: torch.Tensor, k: torch.Tensor, v: torch.Tensor, allowed: torch.Tensor,
               bias: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """As :meth:`forward`, with the keys and values (B, L, d) already projected (a cache)."""
        B, Lq, d = xq.shape
        L = k.shape[1]
        H = self.n_heads
        hd = d // H
        q = self.q(xq).view(B, Lq, H, hd).transpose(1, 2)  # (B, H, Lq, hd)
        kh = k.view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        vh = v.view(B, L, H, hd).transpose(1, 2)  # (B, H, L, hd)
        logits = (q @ kh.transpose(-2, -1)) * (1.0 / math.sqrt(hd))  # (B, H, Lq, L)
        if bias is not None:
            logits = logits + bias.unsqueeze(0)  # (1, H, Lq, L)
        mask = allowed.unsqueeze(1)  # (B, 1, Lq, L)
        logits = logits.masked_fill(~mask, MASK_VALUE)
        att = torch.softmax(logits, dim=-1) * mask.to(logits.dtype)  # zero rows stay zero
        y = self.attn_drop(att) @ vh  # (B, H, Lq, hd)
        y = y.transpose(1, 2).reshape(B, Lq, d)  # (B, Lq, d)
        return self.resid_drop(self.proj(y)), att, k, v


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.sasrec = cfg.block == "sasrec"
        self.ln1 = nn.LayerNorm(cfg.d_model)
        self.attn = SelfAttention(cfg)
        self.ln2 = nn.LayerNorm(cfg.d_model)
        self.ff = nn.Sequential(
            nn.Linear(cfg.d_model, cfg.ff_width),
            nn.ReLU() if self.sasrec else nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.ff_width, cfg.d_model),
            nn.Dropout(cfg.dropout),
        )

    def forward(
        self, x: torch.Tensor, allowed: torch.Tensor, last_only: bool = False, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, T, d) -> (B, T, d), or (B, 1, d) for the newest position only when last_only;
        also the attention (B, H, Tq, T) and this block's keys and values (B, T, d)."""
        h = self.ln1(x)  # (B, T, d)
        kv = x if self.sasrec else h  # the SASRec block attends to un-normalised keys and values
        if last_only:
            x = x[:, -1:, :]  # (B, 1, d)
            hq = h[:, -1:, :]  # (B, 1, d)
            allowed = allowed[:, -1:, :]  # (B, 1, T)
            bias = bias[:, -1:, :] if bias is not None else None  # (H, 1, T)
        else:
            hq = h
        a, att, k, v = self.attn(hq, kv, allowed, bias)
        return self._finish(x, hq, a), att, k, v

    def step(self, x: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, allowed: torch.Tensor,
             bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """One new event x (B, 1, d) over this block's cached keys/values (B, L-1, d) and its own:
        the same computation as the newest position of :meth:`forward` (relative positions).
        Returns its output (B, 1, d), attention (B, H, 1, L) and new key and value (B, d)."""
        h = self.ln1(x)  # (B, 1, d)
        kv = x if self.sasrec else h
        k_new, v_new = self.attn.k(kv), self.attn.v(kv)  # (B, 1, d) each
        k = torch.cat([k_cache, k_new], dim=1)  # (B, L, d)
        v = torch.cat([v_cache, v_new], dim=1)  # (B, L, d)
        a, att, _, _ = self.attn.attend(h, k, v, allowed.unsqueeze(1), bias)
        return self._finish(x, h, a), att, k_new[:, 0], v_new[:, 0]

    def _finish(self, x: torch.Tensor, hq: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """The residuals and the feed-forward after attention, in this block's layout."""
        if self.sasrec:
            f = self.ln2(hq + a)
            return f + self.ff(f)
        x = x + a
        return x + self.ff(self.ln2(x))


class AttnRec(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items, cfg.d_model, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.d_model) if not cfg.relative else None
        # relative: a bias per block, head and query-key distance 0..L-1 (zeros: no preference)
        self.rel_bias = nn.Parameter(torch.zeros(cfg.n_blocks, cfg.n_heads, cfg.max_len)) if cfg.relative else None
        self.type_emb = nn.Embedding(cfg.n_event_types, cfg.d_model, padding_idx=0) if cfg.n_event_types else None
        self.gap_emb = nn.Embedding(cfg.n_gap_buckets, cfg.d_model, padding_idx=0) if cfg.n_gap_buckets else None
        self.content = ContentEncoder(cfg) if cfg.has_content else None
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList([Block(cfg) for _ in range(cfg.n_blocks)])
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.apply(self._init_weights)
        # Xavier-normal item embeddings: N(0,1)*sqrt(d) tied to the output made full-CE training
        # crawl on Beauty (DESIGN.md, Model).
        nn.init.xavier_normal_(self.item_emb.weight)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)
            if m.padding_idx is not None:
                with torch.no_grad():
                    m.weight[m.padding_idx].zero_()

    def _embed_events(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        """Item [+ type] [+ gap] embeddings (B, T, d), before positions, dropout and masking."""
        x = self.item_vectors(items)
        if self.type_emb is not None:
            x = x + self.type_emb(types)
        if self.gap_emb is not None:
            x = x + self.gap_emb(gaps)
        return x

    def _embed(self, items: torch.Tensor, types: torch.Tensor,
               gaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, T) x3 -> embeddings (B, T, d), allowed-attention mask (B, T, T) and, with relative
        positions, the distance of each query-key pair (T, T) for the biases."""
        assert items.dim() == 2, f"items must be (B, T), got shape {tuple(items.shape)}"
        T = items.shape[1]
        valid = items != 0  # (B, T)
        x = self._embed_events(items, types, gaps)
        qi = torch.arange(T, device=items.device)  # (T,)
        dist = qi.unsqueeze(1) - qi.unsqueeze(0)  # (T, T): query i - key j
        if self.pos_emb is not None:
            assert T <= self.cfg.max_len, f"sequence of length {T} > max_len {self.cfg.max_len}"
            # distance from the end: newest (index T-1) -> 0, so any T <= max_len works
            x = x + self.pos_emb(T - 1 - qi).unsqueeze(0)  # (B, T, d)
            band = dist >= 0  # causal
        else:
            band = (dist >= 0) & (dist < self.cfg.max_len)  # causal, the last L events
        x = self.emb_drop(x) * valid.unsqueeze(-1).to(x.dtype)  # (B, T, d), pads zeroed
        allowed = band.unsqueeze(0) & valid.unsqueeze(1)  # (B, T, T): query i sees key j in its band, j not pad
        return x, allowed, (dist.clamp(0, self.cfg.max_len - 1) if self.rel_bias is not None else None)

    def _bias(self, b: int, dist: torch.Tensor | None) -> torch.Tensor | None:
        """Block ``b``'s relative-position bias (H, Tq, T) for a distance matrix (Tq, T)."""
        if dist is None or self.rel_bias is None:
            return None
        return self.rel_bias[b][:, dist]  # (H, Tq, T)

    def forward(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
                attentions: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Hidden states at every position, (B, T, d); with a list ``attentions``, each block's
        attention (B, T, T), heads averaged, is appended to it (training/denoise.py)."""
        x, allowed, dist = self._embed(items, types, gaps)
        for b, block in enumerate(self.blocks):
            x, att, _, _ = block(x, allowed, bias=self._bias(b, dist))
            if attentions is not None:
                attentions.append(att.mean(dim=1))
        return self.ln_f(x)  # (B, T, d)

    def final_state(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor,
                    with_cache: bool = False) -> Any:
        """Hidden state of the newest position (B, d) and its attention over its window (B, min(T, L)),
        :meth:`_explanation`'s: averaged over heads, rows sum to 1 over non-pad keys, 0 on pads.

        The last block computes only the newest position's query and feed-forward. With
        ``with_cache`` (relative positions) also every block's keys and values of the last L-1
        events (B, n_blocks, 2, L-1, d), left-padded with zeros, and how many of them are events
        (B,) -- what :meth:`step` needs to go on from here.
        """
        x, allowed, dist = self._embed(items, types, gaps)
        kvs, rows = [], []  # rows: each block's attention of the newest position (B, H, min(T, L))
        for b, block in enumerate(self.blocks[:-1]):
            x, att, k, v = block(x, allowed, bias=self._bias(b, dist))
            kvs.append((k, v))
            rows.append(att[:, :, -1, -self.cfg.max_len:])
        x, att, k, v = self.blocks[-1](x, allowed, last_only=True, bias=self._bias(len(self.blocks) - 1, dist))
        kvs.append((k, v))
        h = self.ln_f(x[:, 0, :])  # (B, d)
        attn = self._explanation([*rows, att[:, :, 0, -self.cfg.max_len:]])  # (B, min(T, L))
        if not with_cache:
            return h, attn
        assert self.cfg.relative, "a key/value cache needs relative positions"
        L1 = self.cfg.max_len - 1
        zeros = (kvs[0][0][:, :1, :] * 0).expand(-1, L1, -1)  # (B, L-1, d), shapes stay symbolic in an export
        cache = torch.stack([torch.stack([torch.cat([zeros, t], dim=1)[:, -L1:] for t in kv], dim=1) for kv in kvs],
                            dim=1)  # (B, n_blocks, 2, L-1, d)
        n = (items != 0).sum(dim=1).clamp(max=L1)  # (B,)
        return h, attn, cache, n

    def step(self, items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor, cache: torch.Tensor,
             n: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Score one new event per row from the cache of the events before it.

        ``items``/``types``/``gaps`` (B, 1): the new event; ``cache`` (B, n_blocks, 2, L-1, d): every
        block's keys and values of the previous events, oldest first, left-padded; ``n`` (B,):
        how many of the cache's slots are events. Returns the new event's hidden state (B, d), its
        attention over its window (:meth:`_explanation`; B, L: the cache's slots, then itself), its keys
        and values (B, n_blocks, 2, d) -- the same numbers :meth:`final_state` computes from the
        whole history, for a fraction of the work.
        """
        assert self.cfg.relative and self.rel_bias is not None, "step needs relative positions"
        L = self.cfg.max_len
        x = self._embed_events(items, types, gaps)  # (B, 1, d)
        slot = torch.arange(L, device=items.device)  # (L,): cache slots 0..L-2, then the new event
        allowed = (slot.unsqueeze(0) >= (L - 1) - n.unsqueeze(1)).unsqueeze(1)  # (B, 1, L)
        dist = (L - 1 - slot).unsqueeze(0)  # (1, L): the new event is at distance 0 from itself
        new, rows = [], []
        for b, block in enumerate(self.blocks):
            x, att, k, v = block.step(x, cache[:, b, 0], cache[:, b, 1], allowed[:, 0], self.rel_bias[b][:, dist])
            new.append(torch.stack([k, v], dim=1))  # (B, 2, d)
            rows.append(att[:, :, 0, :])  # (B, H, L)
        h = self.ln_f(x[:, 0, :])  # (B, d)
        return h, self._explanation(rows), torch.stack(new, dim=1)  # (B, d), (B, L), (B, n_blocks, 2, d)

    def _explanation(self, rows: list[torch.Tensor]) -> torch.Tensor:
        """The newest position's attention rows of every block (B, H, W) -> the explanation (B, W):
        heads averaged, and blocks averaged ("all-blocks") or the last block's ("last-block")."""
        return torch.stack(rows if self.cfg.explain == "all-blocks" else rows[-1:]).mean(dim=(0, 2))

    def _id_keep(self, mask: torch.Tensor) -> torch.Tensor:
        """The id mask, with ``id_dropout`` of it dropped while training."""
        if self.training and self.cfg.id_dropout:
            return mask * (torch.rand_like(mask) >= self.cfg.id_dropout).to(mask.dtype)
        return mask

    def item_vectors(self, items: torch.Tensor) -> torch.Tensor:
        """Item representations of indices (B, T) -> (B, T, d): the id embedding, plus with
        content the content vector (the id part masked for cold items and, in training, by id-dropout)."""
        x = self.item_emb(items)
        if self.content is None:
            return x
        return x * self._id_keep(self.content.id_mask[items]).unsqueeze(-1) + self.content(items)

    def item_table(self) -> torch.Tensor:
        """Every item's representation (n_items, d): the input embeddings and the (tied) output layer."""
        if self.content is None:
            return self.item_emb.weight
        keep = self._id_keep(self.content.id_mask)
        return self.item_emb.weight * keep.unsqueeze(-1) + self.content()

    def trained_items(self) -> torch.Tensor | None:
        """(n_items,) bool: the items the training loss may score (those with training events),
        or None for all. A cold item is never a negative: its own content features (a title
        word no other item has) would otherwise only learn to push it down."""
        return None if self.content is None else self.content.id_mask > 0

    def set_content(self, arrays: dict[str, Any]) -> None:
        """Item content features per vocabulary index (:func:`attnrec.training.content.content_arrays`)."""
        assert self.content is not None, "the model was configured without item content"
        self.content.set_features(arrays)

    def materialised(self) -> AttnRec:
        """The same scorer as a model without content: its item embedding is this model's
        combined item table (eval mode), so the exported graph and the worker do not change."""
        fields_off = {"n_categories": 0, "n_brands": 0, "n_price_buckets": 0, "n_text_buckets": 0,
                      "title_tokens": 0, "text_vec_dim": 0, "id_dropout": 0.0}
        plain = AttnRec(ModelConfig.from_dict({**self.cfg.to_dict(), **fields_off}))
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("content.")}
        was_training = self.training
        self.eval()
        with torch.no_grad():
            state["item_emb.weight"] = self.item_table().detach().clone()
        self.train(was_training)
        plain.load_state_dict(state)
        return plain.eval()

    def item_scores(self, h: torch.Tensor) -> torch.Tensor:
        """(B, d) or (N, d) -> scores over the whole vocabulary (.., n_items), tied embeddings."""
        return h @ self.item_table().t()
