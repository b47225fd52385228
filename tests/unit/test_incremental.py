"""Incremental attention without services: the step equals the full graph (torch), training rows
keep every trained position's history, the cache's rules, and step rows exclude what full rows
exclude (``training/model.py``, ``training/train.py``, ``stream/core/cache.py``, ``stream/core/inputs.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from attnrec.stream.core.cache import KVCache, UserCache
from attnrec.stream.core.entries import encode_entry
from attnrec.stream.core.inputs import build_inputs, build_step_inputs
from attnrec.stream.core.model import LoadedModel
from attnrec.training.model import AttnRec, ModelConfig

from attnrec.events import ClickEvent
from attnrec.manifest import gap_boundaries_ms


def _window(seq: tuple[torch.Tensor, ...], t: int, k: int) -> tuple[torch.Tensor, ...]:
    """The last ``k`` events before index ``t``, left-padded to ``k``."""
    out = []
    for x in seq:
        part = x[:, max(0, t - k) : t]
        out.append(torch.cat([torch.zeros(x.shape[0], k - part.shape[1], dtype=torch.long), part], dim=1))
    return tuple(out)


@pytest.mark.parametrize(("block", "n_blocks", "heads"), [("pre_ln", 1, 1), ("pre_ln", 2, 2), ("sasrec", 1, 2),
                                                          ("sasrec", 2, 1)])
def test_step_by_step_equals_the_full_graph_over_a_sliding_band(block: str, n_blocks: int, heads: int) -> None:
    """60 events through a band of 8: the band slides many times; each step, from the rolled
    cache, gives the full graph's state, attention and cache given the same history."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=300, max_len=8, d_model=32, n_blocks=n_blocks, n_heads=heads, n_event_types=9,
                      n_gap_buckets=32, block=block, positions="relative", dropout=0.0)
    m = AttnRec(cfg).eval()
    with torch.no_grad():
        m.rel_bias.normal_()
    H, N = cfg.history_len, 60
    seq = (torch.randint(2, 300, (3, N)), torch.randint(1, 9, (3, N)), torch.randint(1, 32, (3, N)))
    worst = 0.0
    with torch.no_grad():
        _, _, cache, n = m.final_state(*_window(seq, 2, H), with_cache=True)
        for t in range(2, N):
            h, attn, kv = m.step(*(x[:, t : t + 1] for x in seq), cache, n)
            hf, af, cf, nf = m.final_state(*_window(seq, t + 1, H), with_cache=True)
            cache = torch.cat([cache[:, :, :, 1:], kv.unsqueeze(3)], dim=3)
            n = (n + 1).clamp(max=cfg.max_len - 1)
            worst = max(worst, (h - hf).abs().max().item(), (attn[:, -af.shape[1] :] - af).abs().max().item(),
                        (cache - cf).abs().max().item())
            assert torch.equal(n, nf)
    assert worst < 1e-5, worst


def test_relative_positions_do_not_move_past_keys() -> None:
    """The keys and values of an event are the same whatever came after it (absolute positions
    would shift them): what makes the cache exact."""
    torch.manual_seed(1)
    cfg = ModelConfig(n_items=50, max_len=6, d_model=16, n_blocks=2, positions="relative", dropout=0.0)
    m = AttnRec(cfg).eval()
    items = torch.randint(2, 50, (1, 12))
    z = torch.zeros_like(items)
    with torch.no_grad():
        _, _, c1, _ = m.final_state(items[:, :9], z[:, :9], z[:, :9], with_cache=True)
        _, _, c2, _ = m.final_state(items[:, :10], z[:, :10], z[:, :10], with_cache=True)
    assert torch.allclose(c1[:, :, :, 1:], c2[:, :, :, :-1], atol=1e-6)  # shifted by one slot, unchanged


def test_training_rows_keep_the_history_of_every_trained_position() -> None:
    from attnrec.training.data import Dataset, UserSeq, Vocab
    from attnrec.training.train import row_windows, training_arrays

    L, warmup = 5, 8  # e.g. 2 blocks with a band of 5: a position depends on 8 earlier events
    users = [UserSeq(f"u{u}", list(range(2, 2 + n))) for u, n in enumerate((3, 20, 47))]
    ds = Dataset("t", "s3", Vocab([str(i) for i in range(60)]), users, [len(u.items) for u in users], [], [])
    items, _, _, targets = training_arrays(ds, L, all_windows=True, warmup=warmup)
    assert items.shape[1] == L + warmup
    seen: dict[int, list[int]] = {}
    row = 0
    for u, s in enumerate(users):
        for lo, _n in row_windows(len(s.items), L, True, warmup):
            real = np.flatnonzero(items[row] != 0)
            for p in np.flatnonzero(targets[row] != 0):
                r = p - real[0]  # position among the row's real events
                assert lo == 0 or r >= warmup, (u, lo, p)  # a trained position sees its whole history
                seen.setdefault(u, []).append(int(targets[row][p]))
            row += 1
    for u, s in enumerate(users):  # every target of a history is trained exactly once
        assert sorted(seen[u]) == s.items[1:], u


def test_cache_hits_only_in_step_with_redis_and_evicts_least_recently_used() -> None:
    kv = np.zeros((2, 2, 4, 8), dtype=np.float32)
    c = KVCache(max_bytes=3 * (kv.nbytes + 600))
    c.reset("v1")
    for u in ("a", "b", "c"):
        c.put(u, kv, 2, seq=10, recent=[b"1|view|x"])
    assert c.hit("a", seq=11, new_events=1) is not None  # one new event, cache at seq-1
    assert c.hit("a", seq=12, new_events=1) is None  # behind Redis (another worker served it)
    assert c.hit("a", seq=12, new_events=2) is None  # two new events in one batch: the full graph
    assert c.hit("zz", seq=1, new_events=1) is None  # never seen
    c.put("d", kv, 1, seq=1, recent=[])  # over the bound: "b" (least recently used) goes
    assert c.peek("b") is None and c.peek("a") is not None and c.evictions == 1
    ua = c.peek("a")
    assert ua is not None
    c.advance("a", ua, np.ones((2, 2, 8), dtype=np.float32), b"2|click|y", keep=3)
    got = c.peek("a")
    assert got is not None and got.seq == 11 and got.n == 3 and got.recent == [b"2|click|y", b"1|view|x"]
    assert (got.kv[:, :, -1] == 1).all() and (got.kv[:, :, :-1] == 0).all()
    for i in range(5):  # the byte count follows the entries kept, not only the entries added
        got = c.peek("a")
        assert got is not None
        c.advance("a", got, np.ones((2, 2, 8), dtype=np.float32), b"%d|click|item-%d" % (i + 3, 10**i), keep=3)
    fresh = [UserCache(u.kv, u.n, u.seq, list(u.recent)).nbytes for u in (c.peek(x) for x in ("a", "c", "d")) if u]
    assert c.peek("a").recent[-1] == b"5|click|item-100" and c.bytes == sum(fresh) and len(fresh) == 3  # type: ignore[union-attr]
    c.reset("v2")  # a new model: nothing carries over
    assert len(c) == 0 and c.bytes == 0


def _model(items: list[str], max_len: int, history: int) -> LoadedModel:
    ids = ["<pad>", "<oov>", *items]
    return LoadedModel(version="v", manifest={}, session=None, item_ids=ids,  # type: ignore[arg-type]
                       item_index={it.encode(): i for i, it in enumerate(ids) if i >= 2},
                       event_type_index={t.encode(): i + 1 for i, t in enumerate(["other", "view", "click"])},
                       gap_boundaries_ms=np.asarray(gap_boundaries_ms(), dtype=np.int64), max_len=max_len, top_k=5,
                       uses_types=True, uses_gaps=True, popularity=items, history_len=history,
                       cache_shape=(1, 2, max_len - 1, 4))


@pytest.mark.parametrize("exclude_window", [0, 3, 9])
def test_a_step_row_excludes_and_encodes_what_a_full_row_would(exclude_window: int) -> None:
    items = [f"i{k}" for k in range(30)]
    m = _model(items, max_len=4, history=7)
    buf = [encode_entry(ClickEvent("e", "u", items[k % 30], ("view", "click")[k % 2], 1_000_000 + 5000 * k)).encode()
           for k in reversed(range(20))]  # newest first
    full = build_inputs(m, {"u": buf}, ["u"], exclude_seen=True, exclude_window=exclude_window)
    keep = max(m.max_len, exclude_window)
    cache = KVCache(1 << 20)
    cache.put("u", np.zeros(m.cache_shape, np.float32), 3, seq=19, recent=buf[1 : keep + 1])
    c = cache.peek("u")
    assert c is not None
    step = build_step_inputs(m, ["u"], [buf[0]], [c], exclude_seen=True, exclude_window=exclude_window)
    assert set(step.exclude[0][step.exclude[0] > 1]) == set(full.exclude[0][full.exclude[0] > 1])
    assert step.items[0, 0] == full.items[0, -1] and step.types[0, 0] == full.types[0, -1]
    assert step.gaps[0, 0] == full.gaps[0, -1] > 0  # the gap to the previous event, bucketed alike
    assert list(step.windows[0]) == buf[: m.max_len]  # the attention's window: the new event, then the older
