"""Intervals and paired comparisons through attnrec train / eval, the CPU-time budget, the
learning-rate schedule and the ml1m-loo-all format (tiny data, seconds)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from attnrec.apps.cli import main
from attnrec.training.sim.synth import generate

METRICS = ("hr@10", "ndcg@10", "hr@20", "ndcg@20")


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clicks")
    (d / "part-0.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in generate(80, 60, 2400, seed=11)))
    return d


@pytest.fixture(scope="module")
def checkpoint(events: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ckpt")
    assert main(["train", "--data", str(events), "--format", "events", "--out", str(out), "--epochs", "2",
                 "--max-len", "20", "--quiet", "--threads", "1"]) == 0
    return out


def test_a_checkpoint_keeps_per_user_ranks_and_intervals(checkpoint: Path) -> None:
    metrics = json.loads((checkpoint / "metrics.json").read_text())
    per_user = json.loads((checkpoint / "per_user.json").read_text())
    assert "per_user" not in metrics and per_user["protocol"] == "loo-full-ranking"
    for split in ("val", "test"):
        pu = per_user[split]
        assert len(pu["user_ids"]) == len(pu["ranks"]) == metrics[split]["users"] == 80
        hits = np.asarray(pu["ranks"]) < 10
        assert hits.mean() == pytest.approx(metrics[split]["hr@10"])
        for m in METRICS:
            lo, hi = metrics[split]["intervals"][m]
            assert lo <= metrics[split][m] <= hi and hi > lo, (split, m)


def test_eval_reports_intervals_and_compares_with_a_saved_result(checkpoint: Path, events: Path,
                                                                  tmp_path: Path) -> None:
    res_file = tmp_path / "eval.json"
    assert main(["eval", "--model", str(checkpoint), "--data", str(events), "--format", "events", "--split", "val",
                 "--json", str(res_file), "--compare", str(checkpoint)]) == 0
    res = json.loads(res_file.read_text())
    assert res["interval_method"]["resamples"] == 1000 and set(res["intervals"]) == set(METRICS)
    assert len(res["per_user"]["ranks"]) == 80
    (cmp,) = res["comparisons"]  # the same model against its own saved validation ranks: a tie, 0 apart
    assert cmp["split"] == "val" and cmp["users"] == 80
    assert all(cmp["paired"][m]["diff"] == 0 and cmp["paired"][m]["verdict"] == "tie" for m in METRICS)

    from attnrec.training.compare import load_result

    from attnrec.errors import ConfigError

    with pytest.raises(ConfigError, match="split 'val', not 'test'"):
        load_result(str(res_file), "test")


def _result(path: Path, ranks: list[int], split: str = "test") -> str:
    users = [f"u{i}" for i in range(len(ranks))]
    path.write_text(json.dumps({"dataset": "d", "protocol": "loo-full-ranking", "split": split,
                                "per_user": {"user_ids": users, "ranks": ranks}}))
    return str(path)


def test_compare_two_saved_sides_paired_and_averaged_over_seeds(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    """B misses where A hits for 150 of 1,000 users: A is ahead with an interval above 0. A
    side of two seeds is averaged per user; users are paired by id whatever their order."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=1000).tolist()  # every user a hit at 10
    b = list(a)
    for i in range(150):
        b[i] = 50
    a_file = _result(tmp_path / "a.json", a)
    order = rng.permutation(1000)
    shuffled = tmp_path / "a2.json"  # the same ranks, users listed in another order
    shuffled.write_text(json.dumps({"dataset": "d", "protocol": "loo-full-ranking", "split": "test", "per_user": {
        "user_ids": [f"u{i}" for i in order], "ranks": [a[i] for i in order]}}))
    b_file = _result(tmp_path / "b.json", b)
    out = tmp_path / "cmp.json"
    assert main(["eval", "--compare", f"{a_file},{shuffled}", b_file, "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    hr = rep["paired"]["hr@10"]
    assert hr["diff"] == pytest.approx(0.15) and hr["verdict"] == "a ahead" and hr["interval"][0] > 0.1
    assert rep["a"]["per_result"]["hr@10"] == [1.0, 1.0] and rep["b"]["metrics"]["hr@10"] == pytest.approx(0.85)
    assert "per_user" not in json.loads(capsys.readouterr().out)

    from attnrec.training.compare import compare_files

    from attnrec.errors import ConfigError

    with pytest.raises(ConfigError, match="missing"):
        compare_files([a_file], [_result(tmp_path / "c.json", b[:999])], "test")


def test_cpu_budget_stops_before_an_epoch_that_would_cross_it(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    assert main(["train", "--data", str(events), "--format", "events", "--out", str(out), "--epochs", "5",
                 "--max-len", "20", "--quiet", "--threads", "1", "--max-cpu-minutes", "0.00001",
                 "--max-minutes", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["stop_reason"] == "CPU budget of 1e-05 min"


def test_lr_schedules() -> None:
    from attnrec.training.train import lr_factor

    assert [lr_factor(s, 10, "constant", 0) for s in (0, 9)] == [1.0, 1.0]
    assert [lr_factor(s, 10, "linear", 0) for s in (0, 5, 10)] == [1.0, 0.5, 0.0]
    assert lr_factor(5, 10, "cosine", 0) == pytest.approx(0.5) and lr_factor(10, 10, "cosine", 0) == pytest.approx(0)
    assert [lr_factor(s, 12, "linear", 2) for s in (0, 1, 2, 7)] == [0.5, 1.0, 1.0, 0.5]


def test_a_scheduled_run_ends_at_a_learning_rate_near_zero(events: Path, tmp_path: Path) -> None:
    out = tmp_path / "ckpt"
    assert main(["train", "--data", str(events), "--format", "events", "--out", str(out), "--epochs", "3",
                 "--max-len", "20", "--quiet", "--threads", "1", "--lr-schedule", "linear", "--warmup-epochs", "1",
                 "--lr", "0.002", "--patience", "5", "--batch-size", "16"]) == 0
    curve = json.loads((out / "metrics.json").read_text())["curve"]
    # 80 rows in batches of 16: 5 steps an epoch, 15 in all, 5 of warm-up; the rate logged after each
    # epoch is its last step's: warm-up done (1), then 1 - (9 - 5) / 10 and 1 - (14 - 5) / 10 of the peak
    assert [r["lr"] for r in curve] == pytest.approx([0.002, 0.0012, 0.0002])


def test_ml1m_loo_all_reads_every_line_as_a_user(tmp_path: Path) -> None:
    from attnrec.training.data import load_dataset

    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "input.txt").write_text("1 2 3 4\n5 6\n2 3 5 7 9\n")
    ds = load_dataset(tmp_path, "ml1m-loo-all")
    assert ds.name == "ml1m-loo-all" and [u.user_id for u in ds.users] == ["1", "2", "3"]
    assert ds.train_len == [2, 2, 3] and ds.val == [(0, 2), (2, 3)] and ds.test == [(0, 3), (2, 4)]
    assert [ds.vocab.item_id(ds.users[2].items[i]) for i in (3, 4)] == ["7", "9"]


def test_a_model_trained_by_eval_keeps_both_splits(events: Path, tmp_path: Path) -> None:
    """Validation chooses, test reports: a baseline trained here keeps the per-user ranks of
    both splits, so either can be compared later whatever --split printed."""
    from attnrec.training.compare import load_result

    res_file = tmp_path / "gru.json"
    assert main(["eval", "--baseline", "gru4rec", "--data", str(events), "--format", "events", "--split", "val",
                 "--epochs", "1", "--max-len", "20", "--quiet", "--threads", "1", "--json", str(res_file)]) == 0
    res = json.loads(res_file.read_text())
    assert res["all_splits"]["val"]["metrics"] == res["metrics"]
    test = load_result(str(res_file), "test")
    assert len(test.ranks) == 80 and test.ranks != load_result(str(res_file), "val").ranks


def test_warmup_targets_train_every_position_of_a_row() -> None:
    from attnrec.training.config import ModelConfig, TrainConfig
    from attnrec.training.data import Dataset, UserSeq, Vocab, _loo
    from attnrec.training.train import training_arrays

    mcfg = ModelConfig(n_items=40, max_len=5, n_blocks=2, positions="relative")  # history 9, warm-up 8
    assert TrainConfig().rows(mcfg) == (5, 8) and TrainConfig(warmup_targets=True).rows(mcfg) == (13, 0)
    users = [UserSeq("a", list(range(2, 32)))]  # 30 events: 28 for training
    tl, val, test = _loo(users)
    ds = Dataset("d", "s3", Vocab([str(i) for i in range(38)]), users, tl, val, test)
    plain = training_arrays(ds, 5, True, 8)[3]
    every = training_arrays(ds, 13, True, 0)[3]
    assert plain.shape[1] == every.shape[1] == 13
    # the same 27 targets either way, in fewer rows when the warm-up positions are trained too
    assert sorted(plain[plain > 1].tolist()) == sorted(every[every > 1].tolist()) == list(range(3, 30))
    assert len(every) < len(plain)


def test_deletion_check_scores_each_removal_as_computed_by_hand(checkpoint: Path, events: Path) -> None:
    """One sampled case recomputed outside the check: the top-1 item with the history masked,
    and its score's drop when the newest or the most-attended event is removed."""

    import torch
    from attnrec.training.attention import deletion_check
    from attnrec.training.checkpoint import load_checkpoint
    from attnrec.training.data import Vocab, load_dataset

    model, _, vocab = load_checkpoint(str(checkpoint))
    ds = load_dataset(events, "events", Vocab.from_dict(vocab))
    cases = [(u, cut) for u, cut in ds.split("test") if cut >= 2]
    full = deletion_check(model, ds, "test", seed=3)
    assert full["cases"] == len(cases) > 50
    top, rnd = full["score_drop"]["top"]["mean"], full["score_drop"]["random"]["mean"]
    assert full["factor"] == pytest.approx(top / rnd, rel=1e-2)
    lo, hi = full["factor_interval"]
    assert lo <= full["factor"] <= hi
    assert deletion_check(model, ds, "test", seed=3) == full  # seeded: the same picks, the same figures
    d = full["difference"]  # paired: top minus random, case by case
    assert d["top_minus_random"] == pytest.approx(top - rnd, abs=2e-4)
    assert d["interval"][0] <= d["top_minus_random"] <= d["interval"][1]
    assert full["passes"] == (d["interval"][0] > 0)

    res = deletion_check(model, ds, "test", max_cases=1, seed=3)
    (i,) = np.random.default_rng(3).choice(len(cases), size=1, replace=False)
    row, score = _case(model, ds, *cases[int(i)])

    with torch.no_grad():
        sc, att = score(row)
        best = int(sc.argmax())
        n = len(row[0])
        nw = min(n, att.shape[0])
        for key, pos in (("newest", n - 1), ("top", n - nw + int(att[att.shape[0] - nw :].argmax()))):
            sc2, _ = score([x[:pos] + x[pos + 1 :] for x in row])
            assert res["score_drop"][key]["mean"] == pytest.approx(float(sc[best] - sc2[best]), abs=2e-4), key


def test_deletion_check_past_only_leaves_the_trigger_out_of_both_picks(checkpoint: Path, events: Path) -> None:
    """With past_only the top-explained event is the heaviest of the earlier events (recomputed by
    hand for one sampled case), and cases need two earlier events."""

    import torch
    from attnrec.training.attention import deletion_check
    from attnrec.training.checkpoint import load_checkpoint
    from attnrec.training.data import Vocab, load_dataset

    model, _, vocab = load_checkpoint(str(checkpoint))
    ds = load_dataset(events, "events", Vocab.from_dict(vocab))
    cases = [(u, cut) for u, cut in ds.split("test") if cut >= 3]
    res = deletion_check(model, ds, "test", max_cases=1, seed=5, past_only=True)
    assert res["past_only"] and deletion_check(model, ds, "test", seed=5, past_only=True)["cases"] == len(cases)
    (i,) = np.random.default_rng(5).choice(len(cases), size=1, replace=False)
    row, score = _case(model, ds, *cases[int(i)])

    with torch.no_grad():
        sc, att = score(row)
        best = int(sc.argmax())
        n = len(row[0])
        nw = min(n, att.shape[0])
        pos = n - nw + int(att[att.shape[0] - nw : att.shape[0] - 1].argmax())  # the newest left out
        assert pos < n - 1
        sc2, _ = score([x[:pos] + x[pos + 1 :] for x in row])
        assert res["score_drop"]["top"]["mean"] == pytest.approx(float(sc[best] - sc2[best]), abs=2e-4)


def _case(model: Any, ds: Any, u: int, cut: int) -> tuple[list[list[int]], Callable[[list[list[int]]], tuple[Any, Any]]]:
    """One deletion-check case recomputed by hand: the user's window before ``cut`` (items,
    types, gaps) and a scorer of any window (the scores with seen items masked, the attention)."""
    import math

    import torch
    from attnrec.training.features import left_pad

    s, L = ds.users[u], model.cfg.history_len
    lo_ = max(0, cut - L)
    row = [s.items[lo_:cut], (s.types or [0] * len(s.items))[lo_:cut], (s.gaps or [0] * len(s.items))[lo_:cut]]

    def score(r: list[list[int]]) -> tuple[Any, Any]:
        h, att = model.final_state(*(torch.tensor([left_pad(x, L)]) for x in r))
        sc = model.item_scores(h)[0].clone()
        sc[:2] = -math.inf
        sc[torch.tensor(s.items[:cut])] = -math.inf
        return sc, att[0]

    return row, score
