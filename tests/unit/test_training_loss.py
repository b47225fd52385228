"""Training losses: every loss and negative-sampling mode gives a finite loss with gradients."""

from __future__ import annotations

import pytest
import torch
from attnrec.training.config import NEGATIVES_PER
from attnrec.training.model import AttnRec, ModelConfig
from attnrec.training.train import TrainConfig, _loss


def _batch() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(3)
    items = torch.randint(2, 30, (6, 8), generator=g)
    items[0, :5] = 0  # a short, left-padded row
    targets = torch.roll(items, -1, dims=1)
    targets[:, -1] = torch.randint(2, 30, (6,), generator=g)
    targets[0, :5] = 0
    zeros = torch.zeros_like(items)
    return items, zeros, zeros, targets


@pytest.mark.parametrize(("loss", "per"), [("ce", "row"), ("bce", "row")] + [("sampled", p) for p in NEGATIVES_PER])
def test_losses_are_finite_and_train_every_used_parameter(loss: str, per: str) -> None:
    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=30, max_len=8, d_model=16))
    tcfg = TrainConfig(loss=loss, n_negatives=7, negatives_per=per)
    value = _loss(model, tcfg, *_batch(), torch.Generator().manual_seed(0))
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    assert model.item_emb.weight.grad is not None and model.item_emb.weight.grad.abs().sum() > 0
    assert model.blocks[0].attn.q.weight.grad.abs().sum() > 0


def test_bad_negatives_mode_is_rejected() -> None:
    with pytest.raises(AssertionError):
        TrainConfig(loss="sampled", negatives_per="user")


def test_label_smoothing_matches_its_definition_and_needs_full_softmax() -> None:
    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=30, max_len=8, d_model=16)).eval()  # eval: no dropout, same logits twice
    batch = _batch()
    plain = _loss(model, TrainConfig(loss="ce"), *batch, torch.Generator())
    smooth = _loss(model, TrainConfig(loss="ce", label_smoothing=0.1), *batch, torch.Generator())
    # by hand: (1 - eps) * NLL(target) + eps * mean over the 28 scorable items of -log p
    items, _, _, targets = batch
    sel = (targets > 1) & (items != 0)
    with torch.no_grad():
        logp = torch.log_softmax(model(*batch[:3])[sel] @ model.item_emb.weight[2:].t(), dim=-1)
    expected = 0.9 * plain + 0.1 * (-logp.mean(-1)).mean()
    assert smooth.item() == pytest.approx(expected.item(), rel=1e-5)
    assert smooth.item() != pytest.approx(plain.item(), rel=1e-3)
    with pytest.raises(AssertionError, match="label_smoothing"):
        TrainConfig(loss="sampled", label_smoothing=0.1)


@pytest.mark.parametrize("bucket", [True, False])
def test_batches_cover_every_row_once(bucket: bool) -> None:
    import numpy as np
    from attnrec.training.train import _batches

    lengths = np.random.default_rng(0).integers(1, 50, size=1000)
    tcfg = TrainConfig(batch_size=7, bucket_batches=bucket)
    batches = _batches(lengths, tcfg, np.random.default_rng(1))
    rows = torch.cat(batches).numpy()
    assert sorted(rows.tolist()) == list(range(1000))
    assert all(len(b) <= 7 for b in batches)
    if bucket:  # within a batch the lengths are close: far less padding than random batches
        spread = np.mean([np.ptp(lengths[b.numpy()]) for b in batches])
        assert spread < 5



def test_default_recipe_for_short_item_sequences_is_sasrec_block_full_softmax_random_batches(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import default_configs

    p = tmp_path / "s3.txt"
    p.write_text("".join(f"{u} " + " ".join(str(1 + (u * 7 + k) % 300) for k in range(6)) + "\n" for u in range(1, 90)))
    m, t = default_configs(load_dataset(p, "s3"))
    assert (t.loss, m.block, t.bucket_batches, m.d_model) == ("ce", "sasrec", False, 128)
    assert (t.lr, t.label_smoothing, t.denoise, t.drop_hardest) == (5e-4, 0.1, 0.2, 0.0)


def test_default_recipe_for_long_item_sequences_is_full_softmax_random_batches_patient(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import default_configs

    p = tmp_path / "long.txt"  # 40 users with 120 events each (ML-1M-like), 40 validation users
    p.write_text("".join(f"{u} " + " ".join(str(1 + (u * 7 + k) % 300) for k in range(120)) + "\n" for u in range(1, 41)))
    m, t = default_configs(load_dataset(p, "s3"))
    # an incremental model: 2 blocks with a band of 100 read 199 events, which the worker's buffer holds
    assert (m.max_len, m.n_blocks, m.dropout, m.block, m.d_model, m.positions) == (100, 2, 0.1, "pre_ln", 64, "relative")
    assert m.history_len == 199
    assert (t.loss, t.bucket_batches, t.patience) == ("ce", False, 20)
    assert (t.lr, t.label_smoothing, t.denoise) == (1e-3, 0.0, 0.0)  # denoising not measured on long histories


def test_learning_rate_decays_only_after_lr_patience_epochs_without_gain(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from attnrec.training.data import load_dataset
    from attnrec.training.model import ModelConfig
    from attnrec.training.train import train

    p = tmp_path / "s3.txt"
    rng = __import__("random").Random(3)
    p.write_text("".join(f"{u} " + " ".join(str(rng.randint(1, 60)) for _ in range(8)) + "\n" for u in range(1, 120)))
    ds = load_dataset(p, "s3")
    P = 1  # decay after every epoch without a gain (seeded noise data: some epochs gain nothing)
    tcfg = TrainConfig(epochs=10, patience=100, lr=1e-2, lr_decay=0.5, lr_patience=P, threads=1, max_minutes=0)
    _, info = train(ds, ModelConfig(n_items=ds.vocab.n_items, max_len=10), tcfg)
    best, bad, lr = -1.0, 0, 1e-2
    for rec in info["curve"]:  # the lr printed for an epoch is the one it trained with
        assert rec["lr"] == pytest.approx(lr)
        if rec["val_ndcg@10"] > best:
            best, bad = rec["val_ndcg@10"], 0
        else:
            bad += 1
            if bad % P == 0:
                lr *= 0.5
    assert len(info["curve"]) == 10 and lr < 1e-2  # the data is seeded: at least one decay happens



def test_weight_average_follows_the_live_weights_and_swaps_back() -> None:
    from attnrec.training.train import _Ema

    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=20, max_len=5))
    ema = _Ema(model, decay=0.9)
    start = [p.detach().clone() for p in model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    ema.update()  # first step: warm-up decay min(0.9, 1/10) = 0.1 -> avg = start + 0.9
    for a, s in zip(ema.avg, start, strict=True):
        assert torch.allclose(a, s + 0.9, atol=1e-6)
    live = [p.detach().clone() for p in model.parameters()]
    ema.swap()
    assert all(torch.allclose(p, a0 + 0.9, atol=1e-6) for p, a0 in zip(model.parameters(), start, strict=True))
    ema.swap()
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), live, strict=True))


@pytest.mark.parametrize("all_windows", [False, True])
def test_default_weight_average_spans_a_few_epochs_of_steps(tmp_path, all_windows: bool) -> None:  # type: ignore[no-untyped-def]
    import math

    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import EMA_EPOCHS, default_configs
    from attnrec.training.train import row_windows, training_arrays

    p = tmp_path / "s3.txt"
    p.write_text("".join(f"{u} " + " ".join(str(1 + (u + k) % 90) for k in range(3 + u % 140)) + "\n" for u in range(1, 400)))
    ds = load_dataset(p, "s3")
    m, t = default_configs(ds)
    rows = training_arrays(ds, m.max_len, all_windows, m.warmup)[0].shape[0]
    assert sum(len(row_windows(n, m.max_len, all_windows, m.warmup)) for n in ds.train_len) == rows
    rows = training_arrays(ds, m.max_len, t.all_windows, m.warmup)[0].shape[0]
    assert t.ema == pytest.approx(1 - 1 / (EMA_EPOCHS * math.ceil(rows / t.batch_size)), abs=1e-6)


def test_default_width_for_event_streams_stays_at_the_serving_budget(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from attnrec.training.data import load_dataset
    from attnrec.training.defaults import default_configs

    p = tmp_path / "ev.jsonl"  # short histories, as Beauty's, but our own click events: d=64 (serving budget)
    rows = [{"event_id": f"e{u}-{k}", "user_id": f"u{u}", "item_id": f"i{(u * 7 + k) % 300}", "event_type": "click",
             "ts": 1_700_000_000 + 60 * k} for u in range(90) for k in range(6)]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    m, t = default_configs(load_dataset(p, "events"))
    assert (m.d_model, m.block, m.max_len) == (64, "sasrec", 50)
    assert (t.lr, t.label_smoothing) == (1e-3, 0.0)  # the retrainer's capped runs keep the fast start


@pytest.mark.parametrize(("loss", "denoise"), [("ce", 0.0), ("bce", 0.0), ("sampled", 0.0), ("sampled", 0.2)])
def test_a_batch_without_a_known_next_item_trains_nothing_and_stays_finite(loss: str, denoise: float) -> None:
    """A sparse log with rare items mapped out can give a batch whose every target is OOV: a mean
    over no position is NaN, and one optimizer step on it made every weight NaN (a retrain on the
    Taobao slice, 2026-12-07)."""
    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=30, max_len=8, d_model=16))
    items, types, gaps, targets = _batch()
    targets = torch.where(targets > 0, torch.ones_like(targets), targets)  # every next item OOV
    value = _loss(model, TrainConfig(loss=loss, n_negatives=7, denoise=denoise), items, types, gaps, targets,
                  torch.Generator().manual_seed(0))
    assert torch.isfinite(value)
    if not denoise:
        assert value.item() == 0.0
    value.backward()
    assert all(p.grad is None or bool(torch.isfinite(p.grad).all()) for p in model.parameters())
