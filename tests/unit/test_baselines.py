"""The non-attention baselines (training/baselines.py), the attention-mass measure, the
keep-history protocol and ``attnrec eval`` over them, on tiny synthetic data (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from attnrec.apps.cli import main
from attnrec.training.attention import attention_mass, noise_attention
from attnrec.training.baselines import GRU4Rec, MeanPool, baseline_config, fit_baseline
from attnrec.training.data import Dataset, dataset_from_events
from attnrec.training.defaults import default_configs
from attnrec.training.evaluate import evaluate
from attnrec.training.model import AttnRec, ModelConfig
from attnrec.training.noise import inject_noise
from attnrec.training.sim.synth import generate


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return dataset_from_events(generate(150, 60, 6000, seed=11), "tiny")


def _cfg(**kw: object) -> ModelConfig:
    return ModelConfig(**{"n_items": 30, "max_len": 6, "d_model": 16, "n_event_types": 9, "n_gap_buckets": 32,
                          "positions": "absolute", **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize("cls", [GRU4Rec, MeanPool])
def test_shapes_and_padding_never_changes_a_state(cls: type) -> None:
    torch.manual_seed(0)
    model = cls(_cfg()).eval()
    seq = torch.tensor([[5, 9, 7]])
    ty, ga = torch.tensor([[1, 2, 1]]), torch.tensor([[0, 3, 4]])
    z = torch.zeros(1, 3, dtype=torch.long)
    items = torch.cat([torch.cat([z, seq], 1), torch.cat([z[:, :1], torch.tensor([[3]]), torch.tensor([[2]]), seq], 1)])
    types = torch.cat([torch.cat([z, ty], 1), torch.cat([z[:, :1], torch.tensor([[1, 1]]), ty], 1)])
    gaps = torch.cat([torch.cat([z, ga], 1), torch.cat([z[:, :1], torch.tensor([[1, 1]]), ga], 1)])
    hidden = model(items, types, gaps)
    assert hidden.shape == (2, 6, 16) and (hidden[0, :3] == 0).all()  # pad positions are zeros
    h, att = model.final_state(items, types, gaps)
    assert h.shape == (2, 16) and att is None and model.item_scores(h).shape == (2, 30)
    # the same three events with more left padding: the same state (padding never enters)
    h1, _ = model.final_state(seq, ty, ga)
    h2, _ = model.final_state(torch.cat([torch.zeros(1, 5, dtype=torch.long), seq], 1),
                              torch.cat([torch.zeros(1, 5, dtype=torch.long), ty], 1),
                              torch.cat([torch.zeros(1, 5, dtype=torch.long), ga], 1))
    assert torch.allclose(h1, h2, atol=1e-6) and torch.allclose(h1, h[0:1], atol=1e-6)
    assert not torch.allclose(h[0], h[1], atol=1e-4)  # two more events do change it


def test_meanpool_ignores_order_and_gru_does_not() -> None:
    torch.manual_seed(0)
    cfg = _cfg(n_event_types=0, n_gap_buckets=0)
    a, b = torch.tensor([[4, 8, 12]]), torch.tensor([[12, 4, 8]])
    z = torch.zeros_like(a)
    mp, gru = MeanPool(cfg).eval(), GRU4Rec(cfg).eval()
    assert torch.allclose(mp.final_state(a, z, z)[0], mp.final_state(b, z, z)[0], atol=1e-6)
    assert not torch.allclose(gru.final_state(a, z, z)[0], gru.final_state(b, z, z)[0], atol=1e-4)


def test_meanpool_window_is_the_last_max_len_events() -> None:
    torch.manual_seed(0)
    mp = MeanPool(_cfg(max_len=3, n_event_types=0, n_gap_buckets=0)).eval()
    long, short = torch.tensor([[2, 3, 4, 5, 6]]), torch.tensor([[4, 5, 6]])
    assert torch.allclose(mp.final_state(long, long * 0, long * 0)[0], mp.final_state(short, short * 0, short * 0)[0],
                          atol=1e-6)


@pytest.mark.parametrize("name", ["gru4rec", "meanpool"])
def test_baselines_train_in_the_shared_loop_and_beat_random(ds: Dataset, name: str) -> None:
    mcfg, tcfg = default_configs(ds)
    mcfg.max_len, mcfg.d_model = 20, 32
    tcfg.epochs, tcfg.threads, tcfg.seed, tcfg.lr, tcfg.patience = 6, 1, 3, 3e-3, 6
    model, metrics = fit_baseline(ds, name, mcfg, tcfg)
    assert metrics["model"]["baseline"] == name and len(metrics["curve"]) == metrics["epochs_run"] >= 1
    assert metrics["curve"][-1]["loss"] < metrics["curve"][0]["loss"] or metrics["epochs_run"] == 1
    gen = torch.Generator().manual_seed(0)

    def rand(items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        return torch.rand(items.shape[0], ds.vocab.n_items, generator=gen)

    random_ndcg = evaluate(rand, ds, "test", 20)["ndcg@10"]
    assert metrics["test"]["ndcg@10"] > 1.5 * random_ndcg, (metrics["test"]["ndcg@10"], random_ndcg)
    assert baseline_config(mcfg).history_len == mcfg.max_len


def test_attention_mass_on_a_hand_made_case() -> None:
    att = np.array([[0.5, 0.3, 0.2], [0.0, 0.6, 0.4], [0.0, 0.0, 0.0]])
    inj = np.array([[True, False, False], [False, False, True], [False, False, False]])
    valid = np.array([[True, True, True], [False, True, True], [False, False, False]])  # row 3: no events
    m = attention_mass(att, inj, valid)
    assert m["cases"] == 2
    assert m["mass_on_injected"] == pytest.approx((0.5 + 0.4) / 2)
    assert m["share_of_window"] == pytest.approx((1 / 3 + 1 / 2) / 2)
    # an injected flag on padding counts for nothing
    assert attention_mass(att, np.array([[False] * 3, [True, False, False], [True] * 3]), valid)["mass_on_injected"] == 0


def test_noise_attention_of_a_model_matches_its_share(ds: Dataset) -> None:
    noisy, info = inject_noise(ds, 0.3, seed=2)
    torch.manual_seed(0)
    model = AttnRec(ModelConfig(n_items=ds.vocab.n_items, max_len=10, d_model=16, n_event_types=9,
                                n_gap_buckets=32, positions="relative")).eval()
    res = noise_attention(model, noisy, info, "test")
    assert res["cases"] == len(noisy.test) and 0 <= res["mass_on_injected"] <= 1
    assert res["share_of_window"] == pytest.approx(0.3, abs=0.05)


def test_keep_history_puts_the_history_back_in_the_ranking(ds: Dataset) -> None:
    # scores = item index: a user's history items above the target push it down only when kept
    def by_index(items: torch.Tensor, types: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
        return torch.arange(ds.vocab.n_items, dtype=torch.float32).expand(items.shape[0], -1)

    excl = evaluate(by_index, ds, "test", 20, return_ranks=True)["ranks"]
    kept = evaluate(by_index, ds, "test", 20, return_ranks=True, keep_history=True)["ranks"]
    n = ds.vocab.n_items
    for (u, cut), r_ex, r_kept in zip(ds.test, excl, kept, strict=True):
        hist = set(ds.users[u].items[:cut])
        t = ds.users[u].items[cut]
        assert r_kept == n - 1 - t  # every item above the target's index ranks first
        if t not in hist:
            assert r_ex == r_kept - len({i for i in hist if i > t})


def test_eval_command_trains_baselines_and_the_model_on_noisy_data(tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "clicks.jsonl"
    d.write_bytes(b"".join(e.to_json() + b"\n" for e in generate(60, 40, 1500, seed=5)))
    common = ["--data", str(d), "--format", "events", "--epochs", "1", "--max-len", "10", "--quiet", "--threads", "1"]
    out = tmp_path / "gru.json"
    assert main(["eval", "--baseline", "gru4rec", *common, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["config"]["evaluation_only"] is True and res["config"]["exported"] is False
    assert res["model"] == "baseline:gru4rec" and res["train_cpu_seconds"] >= 0 and res["noise"] is None
    assert res["protocol"] == "loo-full-ranking" and res["protocol_detail"]["history"] == "excluded"
    out = tmp_path / "attn.json"
    assert main(["eval", "--train", "--noise", "0.2", "--keep-history", *common, "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["noise"]["p"] == 0.2 and res["noise"]["injected_share"] == pytest.approx(0.2, abs=0.01)
    att = res["noise"]["attention"]
    assert 0 <= att["mass_on_injected"] <= 1 and att["share_of_window"] == pytest.approx(0.2, abs=0.05)
    assert res["protocol"] == "loo-full-ranking-history-kept" and "history" not in " ".join(res["protocol_detail"]["excluded"])
    assert res["config"]["trained_here"] is True and res["config"]["exported"] is False
    capsys.readouterr()
    assert main(["eval", "--train", "--baseline", "meanpool", *common]) == 2
    assert "exclude each other" in capsys.readouterr().err
