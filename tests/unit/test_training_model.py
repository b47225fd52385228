"""The model: final_state parity with forward, masking, attention output, config round trip."""

from __future__ import annotations

import pytest
import torch
from attnrec.training.model import BLOCKS, AttnRec, ModelConfig


def _model(**kw) -> AttnRec:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = ModelConfig(n_items=40, max_len=12, d_model=16, n_blocks=2, n_heads=2, dropout=0.3,
                      n_event_types=9, n_gap_buckets=32, **kw)
    return AttnRec(cfg).eval()


def _batch(L: int = 10) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    items = torch.randint(2, 40, (5, L), generator=g)
    for r, pad in enumerate([0, 3, L - 1, L, 5]):  # row 3 fully padded
        items[r, :pad] = 0
    types = torch.randint(1, 9, (5, L), generator=g) * (items != 0)
    gaps = torch.randint(1, 32, (5, L), generator=g) * (items != 0)
    return items, types, gaps


@pytest.mark.parametrize("block", BLOCKS)
def test_final_state_equals_forward_last_position(block: str) -> None:
    model = _model(block=block)
    items, types, gaps = _batch()
    with torch.no_grad():
        full = model(items, types, gaps)  # (B, L, d)
        h, attn = model.final_state(items, types, gaps)
    assert full.shape == (5, 10, 16) and h.shape == (5, 16) and attn.shape == (5, 10)
    torch.testing.assert_close(h, full[:, -1], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(full).all() and torch.isfinite(attn).all()


@pytest.mark.parametrize("block", BLOCKS)
def test_attention_rows_sum_to_one_over_real_events_and_zero_on_pads(block: str) -> None:
    model = _model(block=block)
    items, types, gaps = _batch()
    with torch.no_grad():
        _, attn = model.final_state(items, types, gaps)
    pad = items == 0
    assert (attn[pad] == 0).all()
    sums = attn.sum(1)
    torch.testing.assert_close(sums[[0, 1, 2, 4]], torch.ones(4))
    assert sums[3] == 0  # fully padded row: no NaN, all zeros


@pytest.mark.parametrize("block", BLOCKS)
def test_scores_and_shorter_sequences_and_no_future_leak(block: str) -> None:
    model = _model(block=block)
    items, types, gaps = _batch()
    with torch.no_grad():
        h, _ = model.final_state(items, types, gaps)
        assert model.item_scores(h).shape == (5, 40)
        # left padding does not change the result (position = distance from the end)
        h_padded, _ = model.final_state(items[1:2], types[1:2], gaps[1:2])  # 3 pads
        h_unpadded, _ = model.final_state(items[1:2, 3:], types[1:2, 3:], gaps[1:2, 3:])
        torch.testing.assert_close(h_padded, h_unpadded, rtol=1e-5, atol=1e-5)
        # causality: changing the newest event does not change earlier positions
        full = model(items, types, gaps)
        items2 = items.clone()
        items2[:, -1] = 7
        full2 = model(items2, types, gaps)
    torch.testing.assert_close(full[:, :-1], full2[:, :-1])


@pytest.mark.parametrize("positions", ["absolute", "relative"])
def test_the_explanation_is_the_newest_positions_attention_averaged_over_blocks(positions: str) -> None:
    """``because`` reads final_state's attention: every block's row of the newest position, heads
    and blocks averaged ("all-blocks", the default), or the last block's ("last-block")."""
    items, types, gaps = _batch()
    for explain in ("all-blocks", "last-block"):
        model = _model(positions=positions, explain=explain)
        blocks: list[torch.Tensor] = []
        with torch.no_grad():
            _, att = model.final_state(items, types, gaps)
            model(items, types, gaps, attentions=blocks)
        rows = [b[:, -1, -model.cfg.max_len:] for b in blocks]
        want = torch.stack(rows).mean(0) if explain == "all-blocks" else rows[-1]
        assert torch.allclose(att, want, atol=1e-6), explain
    assert ModelConfig.from_dict({"n_items": 40}).explain == "all-blocks"
    with pytest.raises(AssertionError, match="explain"):
        ModelConfig(n_items=40, explain="rollout")


def test_config_round_trip_and_padding_row() -> None:
    model = _model()
    cfg2 = ModelConfig.from_dict(model.cfg.to_dict() | {"unknown_future_key": 1})
    assert cfg2 == model.cfg
    assert (model.item_emb.weight[0] == 0).all()


def test_block_layouts_differ_and_old_configs_load_as_pre_ln() -> None:
    items, types, gaps = _batch()
    with torch.no_grad():
        h_pre, _ = _model(block="pre_ln").final_state(items, types, gaps)
        h_sas, _ = _model(block="sasrec").final_state(items, types, gaps)
    assert not torch.allclose(h_pre, h_sas)
    old = {k: v for k, v in _model().cfg.to_dict().items() if k != "block"}  # a checkpoint from before the option
    assert ModelConfig.from_dict(old).block == "pre_ln"
    with pytest.raises(AssertionError):
        ModelConfig(n_items=40, block="post_ln")


def test_sasrec_block_exports_and_passes_the_parity_gate(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Both layouts have the same parameters; the exported graph keeps its contract."""
    import json

    from attnrec.exporter.export import export_checkpoint
    from attnrec.exporter.testing import write_random_checkpoint

    from attnrec.modelcheck import load_checked
    from attnrec.registry import Registry

    ckpt = write_random_checkpoint(tmp_path / "c", n_items=80, max_len=10, d_model=16, n_blocks=2,
                                   n_event_types=0, n_gap_buckets=0)
    config = json.loads((ckpt / "config.json").read_text())
    config["model"]["block"] = "sasrec"
    (ckpt / "config.json").write_text(json.dumps(config))
    version = export_checkpoint(ckpt, tmp_path / "registry")
    loaded = load_checked(Registry(tmp_path / "registry").version_dir(version))
    assert [i.name for i in loaded.session.get_inputs()] == ["items", "types", "gaps", "exclude"]
    assert loaded.manifest["parity"]["passed"]
