"""Export: the serving graph's contract, the parity gate, the promotion gate and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from attnrec.exporter.checkpoint import load_checkpoint
from attnrec.exporter.export import export_checkpoint
from attnrec.exporter.gate import gate_decision, promote_gated
from attnrec.exporter.graph import export_onnx
from attnrec.exporter.parity import PARITY_MAX_ABS_DIFF, parity_check
from attnrec.exporter.testing import write_random_checkpoint

from attnrec.errors import ModelError
from attnrec.modelcheck import load_checked
from attnrec.registry import Registry

N_ITEMS, MAX_LEN = 150, 16


@pytest.fixture(scope="module")
def ckpt_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("c") / "ckpt", n_items=N_ITEMS, max_len=MAX_LEN,
                                   d_model=16, n_blocks=2, n_heads=2, ndcg=0.050)


@pytest.fixture(scope="module")
def served(ckpt_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("r") / "registry"
    version = export_checkpoint(ckpt_dir, root, promote=True, top_k=10)
    return load_checked(Registry(root).version_dir(version))


def _feed(items: np.ndarray, exclude: np.ndarray | None = None) -> dict[str, np.ndarray]:
    items = items.astype(np.int64)
    return {"items": items, "types": (items > 0).astype(np.int64) * 2, "gaps": (items > 0).astype(np.int64) * 3,
            "exclude": items.copy() if exclude is None else exclude.astype(np.int64)}


def test_graph_has_dynamic_batch_length_and_exclusion_width(served) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(1)
    for B, L, E in [(1, 1, 1), (3, 5, 9), (64, MAX_LEN, 2), (7, MAX_LEN, 40)]:
        items = rng.integers(2, N_ITEMS, size=(B, L))
        items[:, : L // 2] = 0  # left padding
        exclude = rng.integers(0, N_ITEMS, size=(B, E))
        top_items, top_scores, attn = served.session.run(None, _feed(items, exclude))
        assert top_items.shape == (B, 10) and top_scores.shape == (B, 10) and attn.shape == (B, L)
        assert top_items.dtype == np.int64 and top_scores.dtype == np.float32 and attn.dtype == np.float32
        assert (np.diff(top_scores, axis=1) <= 0).all()
        assert (top_items > 1).all()  # never PAD or OOV
        for row, excl in zip(top_items, exclude, strict=False):
            assert not set(row.tolist()) & set(excl.tolist())
        assert np.allclose(attn.sum(axis=1), 1.0, atol=1e-5)
        assert (attn[items == 0] == 0).all()  # no attention on padding


def test_excluding_almost_everything_leaves_minus_inf_tail(served) -> None:  # type: ignore[no-untyped-def]
    """With fewer eligible items than K, the tail is -inf (the documented 'drop these')."""
    items = np.array([[0, 0, 5, 6]])
    exclude = np.arange(0, N_ITEMS - 3)[None, :]  # leaves 3 eligible items
    top_items, top_scores, _ = served.session.run(None, _feed(items, exclude))
    assert set(top_items[0, :3].tolist()) == {N_ITEMS - 3, N_ITEMS - 2, N_ITEMS - 1}
    assert np.isfinite(top_scores[0, :3]).all() and np.isneginf(top_scores[0, 3:]).all()


def test_parity_report_meets_thresholds(served) -> None:  # type: ignore[no-untyped-def]
    par = served.manifest["parity"]
    assert par["passed"] and par["max_abs_diff"] <= PARITY_MAX_ABS_DIFF and par["top10_agreement"] >= 0.999
    names = [c["case"] for c in par["cases"]]
    for b in (1, 7, 64):
        for length in (1, 10, MAX_LEN):
            assert f"real B={b} L={length}" in names and f"random B={b} L={length}" in names
    assert any("E=" in n for n in names)


def test_parity_check_catches_a_different_model(ckpt_dir: Path, tmp_path: Path) -> None:
    other = load_checkpoint(write_random_checkpoint(tmp_path / "other", n_items=N_ITEMS, max_len=MAX_LEN,
                                                    d_model=16, n_blocks=2, n_heads=2, seed=7))
    mine = load_checkpoint(ckpt_dir)
    serving = export_onnx(other.model, tmp_path / "s.onnx", top_k=10, max_len=MAX_LEN)
    full = export_onnx(other.model, tmp_path / "f.onnx", top_k=10, max_len=MAX_LEN, full_scores=True)
    report = parity_check(mine, serving, full, top_k=10)
    assert not report["passed"] and report["max_abs_diff"] > 1e-2 and report["top10_agreement"] < 0.5


@pytest.mark.parametrize(("new", "cur", "margin", "ok", "why"), [
    (0.050, None, 0.02, True, "no current model"),
    (0.049, 0.050, 0.02, True, ">= 0.04900"),
    (0.0489, 0.050, 0.02, False, "< 0.04900"),
    (0.060, 0.050, 0.00, True, ">="),
    (None, 0.050, 0.02, False, "has no validation ndcg@10"),
])
def test_gate_decision(new: float | None, cur: float | None, margin: float, ok: bool, why: str) -> None:
    decided, reason = gate_decision(new, cur, margin)
    assert decided is ok and why in reason


@pytest.mark.parametrize(("new", "pop", "ok", "why"), [
    (0.050, 0.020, True, "validation ndcg@10 0.05000 > 0.02000 of the popularity fallback"),
    (0.0012, 0.0030, False, "not better than the popularity fallback on validation (ndcg@10 0.00120 <= 0.00300)"),
    (0.0030, 0.0030, False, "the fallback (trending now, then the popularity list) keeps serving"),
])
def test_a_first_model_must_beat_the_popularity_fallback(new: float, pop: float, ok: bool, why: str) -> None:
    decided, reason = gate_decision(new, None, 0.02, pop)
    assert decided is ok and why in reason
    assert gate_decision(new, 0.9 * new, 0.02, pop)[0]  # with a current model the margin rule alone decides


def test_gate_keeps_the_fallback_serving_when_a_first_model_trails_popularity(tmp_path: Path) -> None:
    root = tmp_path / "registry"
    weak = write_random_checkpoint(tmp_path / "weak", n_items=N_ITEMS, max_len=MAX_LEN, d_model=16, n_blocks=2, n_heads=2,
                                   ndcg=0.0012, seed=3)
    metrics = json.loads((weak / "metrics.json").read_text())
    (weak / "metrics.json").write_text(json.dumps({**metrics, "val_popular": {"ndcg@10": 0.0030, "hr@10": 0.007}}))
    version = export_checkpoint(weak, root, promote=True)
    reg = Registry(root)
    assert reg.current_version() is None
    last = reg.history()[-1]
    assert last["decision"] == "rejected" and last["version"] == version
    assert "not better than the popularity fallback" in last["reason"] and last["figures"]["popular_ndcg@10"] == 0.003


def test_promotion_gate_rejects_worse_model_and_force_overrides(ckpt_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "registry"
    good = export_checkpoint(ckpt_dir, root, promote=True)
    worse_dir = write_random_checkpoint(tmp_path / "worse", n_items=N_ITEMS, max_len=MAX_LEN, d_model=16,
                                        n_blocks=2, n_heads=2, ndcg=0.040, seed=3)
    worse = export_checkpoint(worse_dir, root, promote=True, margin=0.02)
    reg = Registry(root)
    assert reg.current_version() == good
    last = reg.history()[-1]
    assert last["decision"] == "rejected" and last["version"] == worse and last["previous"] == good
    assert last["figures"]["new_ndcg@10"] == pytest.approx(0.040) and last["figures"]["current_ndcg@10"] == pytest.approx(0.050)
    assert reg.read_manifest(worse)["parent"] == good
    # a looser margin lets it through; --force lets it through whatever the margin
    assert promote_gated(reg, worse, margin=0.25)["decision"] == "promoted"
    reg.rollback()
    entry = promote_gated(reg, worse, force=True)
    assert entry["decision"] == "forced" and "forced despite" in entry["reason"]
    assert reg.current_version() == worse


def test_export_rejects_inconsistent_vocab_and_top_k(ckpt_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"top_k=500 must be between 1 and 145 \(148 real items"):
        export_checkpoint(ckpt_dir, tmp_path / "r", top_k=500)
    bad = write_random_checkpoint(tmp_path / "bad", n_items=N_ITEMS, max_len=MAX_LEN, d_model=16)
    vocab = json.loads((bad / "vocab.json").read_text())
    (bad / "vocab.json").write_text(json.dumps({**vocab, "items": vocab["items"][:-1]}))
    with pytest.raises(ModelError, match="vocab.json has 149 entries"):
        export_checkpoint(bad, tmp_path / "r")
    with pytest.raises(ModelError, match="does not exist"):
        export_checkpoint(tmp_path / "nope", tmp_path / "r")


def test_cli_export_list_promote_rollback(ckpt_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from attnrec.apps.cli import main

    root = tmp_path / "registry"
    monkeypatch.setenv("ATTNREC_REGISTRY", str(root))  # flags default to ATTNREC_<FLAG>
    monkeypatch.setenv("ATTNREC_TOP_K", "5")
    assert main(["export", "--checkpoint", str(ckpt_dir), "--promote"]) == 0
    first = Registry(root).current_version()
    assert first and Registry(root).read_manifest(first)["top_k"] == 5
    assert main(["export", "--checkpoint", str(ckpt_dir)]) == 0
    second = Registry(root).versions()[0]["version"]
    assert Registry(root).current_version() == first
    assert main(["models", "promote", second]) == 0
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert f"* {second}" in out and f"  {first}" in out
    assert main(["models", "rollback", "--reason", "test"]) == 0
    assert Registry(root).current_version() == first
    assert main(["models", "rollback"]) == 2  # nothing further back
    assert "nothing to roll back to" in capsys.readouterr().err
    assert main(["models", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["current"] == first and [h["decision"] for h in listed["history"]][-1] == "rollback"


def test_quantize_option_is_measured_and_recorded(ckpt_dir: Path, tmp_path: Path) -> None:
    """int8 is used only when faster and within 1% NDCG@10; either way the figures are recorded."""
    version = export_checkpoint(ckpt_dir, tmp_path / "registry", quantize=True)
    m = Registry(tmp_path / "registry").read_manifest(version)
    q = m["quantization"]
    assert q["requested"] is True and q["applied"] is q["accepted"]
    assert [v["variant"] for v in q["variants"]] == ["all", "encoder"]
    for v in q["variants"]:  # latency and quality measured for every variant, whatever the outcome
        assert v["latency_ms_b32_fp32"] > 0 and v["latency_ms_b32_int8"] > 0 and v["ndcg_rows"] > 0
        assert ("kept fp32" in v["reason"]) != v["accepted"]
    if q["applied"]:
        assert q["rel_ndcg_loss"] < 0.01 and q["speedup"] >= 1.05
    load_checked(Registry(tmp_path / "registry").version_dir(version))  # golden matches what was published


def test_model_without_types_and_gaps_keeps_the_four_input_contract(tmp_path: Path) -> None:
    """Beauty-style data has neither; the tracer would drop the unused inputs."""
    ckpt = write_random_checkpoint(tmp_path / "plain", n_items=80, max_len=10, d_model=16,
                                   n_event_types=0, n_gap_buckets=0)
    version = export_checkpoint(ckpt, tmp_path / "registry")
    loaded = load_checked(Registry(tmp_path / "registry").version_dir(version))
    assert [i.name for i in loaded.session.get_inputs()] == ["items", "types", "gaps", "exclude"]
    m = loaded.manifest
    assert not m["uses_types"] and not m["uses_gaps"] and m["parity"]["passed"]
