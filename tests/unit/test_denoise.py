"""Denoising training (training/denoise.py): inserted events keep the own events in order and
are never targets; the attention loss measures the mass on them; training runs with it."""

from __future__ import annotations

import pytest
import torch
from attnrec.apps.cli import main
from attnrec.training.data import dataset_from_events
from attnrec.training.defaults import default_configs
from attnrec.training.denoise import attention_on, insert_random
from attnrec.training.model import AttnRec, ModelConfig
from attnrec.training.sim.synth import generate
from attnrec.training.train import TrainConfig, train, training_arrays


def _rows() -> tuple[torch.Tensor, ...]:
    """Three left-padded rows of width 12: 10, 4 and 0 own events; items 100+i, types 1+i%3,
    gaps 5+i, targets = the next item."""
    T = 12
    items = torch.zeros(3, T, dtype=torch.long)
    types, gaps, targets = (torch.zeros_like(items) for _ in range(3))
    for r, n in enumerate((10, 4, 0)):
        for i in range(n):
            c = T - n + i
            items[r, c], types[r, c], gaps[r, c], targets[r, c] = 100 + i, 1 + i % 3, 5 + i, 101 + i
    return items, types, gaps, targets


def test_own_events_keep_their_order_and_every_target_is_the_next_own_event() -> None:
    items, types, gaps, targets = _rows()
    gen = torch.Generator().manual_seed(0)
    ni, nt, ng, ny, ins = insert_random(items, types, gaps, targets, 0.3, 50, gen)
    assert ni.shape == items.shape and ins.dtype == torch.bool
    assert ins.any(), "a share of 0.3 over 14 events inserted nothing"
    for r in range(3):
        own = [int(x) for x, m in zip(ni[r], ins[r], strict=True) if x != 0 and not m]
        n_own = int((items[r] != 0).sum())
        # the newest own events, in order, with none missing between them (the oldest may make room)
        assert own == list(range(100 + n_own - len(own), 100 + n_own))
        valid = ni[r] != 0
        assert (ins[r] <= valid).all(), "an inserted flag on padding"
        first = int(valid.nonzero()[0]) if valid.any() else None
        if first is not None:
            assert not ins[r, first], "an inserted event before the row's oldest event"
        prev_own = None
        for c in range(ni.shape[1]):
            if not valid[c]:
                assert ny[r, c] == 0 and nt[r, c] == 0 and ng[r, c] == 0
                continue
            if not ins[r, c]:
                prev_own = int(ni[r, c])
                assert ny[r, c] == prev_own + 1 and nt[r, c] == 1 + (prev_own - 100) % 3
            else:  # an inserted event: a real item, the type / gap and target of the own event before it
                assert 2 <= ni[r, c] < 50 and prev_own is not None
                assert ny[r, c] == prev_own + 1 and ng[r, c] == 5 + prev_own - 100
    assert not ins[2].any() and (ni[2] == 0).all()  # an empty row stays empty


def test_share_of_inserted_events_is_about_q_and_seeded() -> None:
    items = torch.arange(2, 202).repeat(64, 1)  # 64 full rows of 200 events
    zeros = torch.zeros_like(items)
    a = insert_random(items, zeros, zeros, items, 0.2, 500, torch.Generator().manual_seed(1))
    b = insert_random(items, zeros, zeros, items, 0.2, 500, torch.Generator().manual_seed(1))
    c = insert_random(items, zeros, zeros, items, 0.2, 500, torch.Generator().manual_seed(2))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[4], c[4])
    assert abs(a[4].float().mean().item() - 0.2) < 0.02
    assert insert_random(items, zeros, zeros, items, 0.0, 500, torch.Generator())[0] is items


def test_attention_on_is_the_mass_on_inserted_keys_over_real_queries() -> None:
    inserted = torch.tensor([[False, True, False, True]])
    valid = torch.tensor([[False, True, True, True]])
    att = torch.tensor([[[0.0, 0.0, 0.0, 0.0],  # a padding query: not counted
                         [0.0, 1.0, 0.0, 0.0],
                         [0.0, 0.5, 0.5, 0.0],
                         [0.0, 0.2, 0.2, 0.6]]])
    assert attention_on([att], inserted, valid).item() == pytest.approx((1.0 + 0.5 + 0.8) / 3)
    assert attention_on([att, att[:, -1:, :]], inserted, valid).item() == pytest.approx(((2.3 / 3) + 0.8) / 2)
    assert attention_on([], inserted, valid).item() == 0.0


def test_model_returns_each_blocks_attention_rows_summing_to_one() -> None:
    model = AttnRec(ModelConfig(n_items=30, max_len=5, d_model=8, n_blocks=2, positions="relative")).eval()
    items = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    atts: list[torch.Tensor] = []
    hidden = model(items, torch.zeros_like(items), torch.zeros_like(items), attentions=atts)
    assert len(atts) == 2 and atts[0].shape == (1, 8, 8)
    assert torch.allclose(hidden, model(items, torch.zeros_like(items), torch.zeros_like(items)))
    assert torch.allclose(atts[1][0, 2:].sum(-1), torch.ones(6))


def test_training_with_denoise_lowers_attention_on_inserted_events() -> None:
    ds = dataset_from_events(generate(200, 40, 8000, seed=3), "tiny")
    mcfg, tcfg = default_configs(ds)
    mcfg.d_model, mcfg.max_len = 16, 20
    probe = [torch.from_numpy(a[:128]) for a in training_arrays(ds, mcfg.max_len, False, mcfg.warmup)]
    masses = {}
    for q in (0.0, 0.2):
        cfg = TrainConfig(**{**tcfg.to_dict(), "epochs": 15, "patience": 100, "max_minutes": 0, "threads": 1,
                             "lr": 5e-3, "ema": 0.0, "denoise": q, "denoise_weight": 5.0})
        model, info = train(ds, mcfg, cfg)
        assert info["epochs_run"] == 15
        ni, nt, ng, _, ins = insert_random(*probe, 0.2, mcfg.n_items, torch.Generator().manual_seed(9))
        assert 0.15 < ins.sum() / (ni != 0).sum() < 0.25
        atts: list[torch.Tensor] = []
        with torch.no_grad():
            model(ni, nt, ng, attentions=atts)
        masses[q] = attention_on(atts, ins, ni != 0).item()
    assert masses[0.2] < masses[0.0] * 0.85, masses


@pytest.mark.parametrize("flag,value", [("--denoise", "1.5"), ("--denoise-weight", "-1"), ("--drop-hardest", "1")])
def test_bad_denoise_setting_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], flag: str, value: str) -> None:
    assert main(["train", "--data", "x", "--format", "events", "--out", "y", flag, value]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    env = "ATTNREC_TRAIN_" + flag[2:].upper().replace("-", "_")
    assert len(lines) == 1 and lines[0].startswith(f"attnrec: error: {env} ({flag})"), lines


def test_truncated_mean_leaves_out_the_largest_losses() -> None:
    from attnrec.training.train import _truncated_mean

    per = torch.tensor([1.0, 9.0, 2.0, 3.0, 100.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    assert _truncated_mean(per, 0.2).item() == pytest.approx(4.5)  # 100 and 9 left out
    assert _truncated_mean(per, 0.0).item() == pytest.approx(per.mean().item())
    assert _truncated_mean(torch.tensor([3.0]), 0.9).item() == 3.0  # never empty


@pytest.mark.parametrize("loss", ["ce", "bce", "sampled"])
def test_drop_hardest_leaves_out_the_worst_positions_for_every_loss(loss: str) -> None:
    from attnrec.training.train import _loss

    g = torch.Generator().manual_seed(3)
    items = torch.randint(2, 30, (6, 8), generator=g)
    targets = torch.roll(items, -1, dims=1)
    zeros = torch.zeros_like(items)
    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=30, max_len=8, d_model=16, dropout=0.0)).eval()
    full = _loss(model, TrainConfig(loss=loss, n_negatives=5), items, zeros, zeros, targets,
                 torch.Generator().manual_seed(0))
    cut = _loss(model, TrainConfig(loss=loss, n_negatives=5, drop_hardest=0.25), items, zeros, zeros, targets,
                torch.Generator().manual_seed(0))
    assert torch.isfinite(cut) and 0 < cut.item() < full.item()
    cut.backward()
    assert model.item_emb.weight.grad is not None and model.item_emb.weight.grad.abs().sum() > 0


def test_event_streams_train_with_denoising_and_baselines_without_unless_asked() -> None:
    from attnrec.training.cli import configs
    from attnrec.training.settings import TrainingSettings

    ds = dataset_from_events(generate(60, 50, 2400, seed=3), "tiny")
    assert default_configs(ds)[1].denoise == 0.15
    assert configs(TrainingSettings(), ds)[1].denoise == 0.15
    assert configs(TrainingSettings(), ds, baseline=True)[1].denoise == 0.0  # GRU4Rec / mean-pool / SASRec-BCE recipes
    assert configs(TrainingSettings(train_denoise=0.2), ds, baseline=True)[1].denoise == 0.2
    assert configs(TrainingSettings(train_denoise=0.0), ds)[1].denoise == 0.0
