"""Smoke training + evaluation through the CLI handlers on a tiny synthetic event log (seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from attnrec.apps.cli import build_parser, main
from attnrec.training.sim.synth import generate

from attnrec.events import EVENT_TYPES

EVAL_KEYS = {"dataset", "protocol", "users", "items", "metrics", "train_seconds", "config"}
METRIC_KEYS = {"hr@10", "ndcg@10", "hr@20", "ndcg@20", "coverage@10"}


def _run(argv: list[str]) -> int:
    return main(argv)


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("clicks")
    evs = list(generate(80, 60, 2400, seed=11))
    (d / "part-0.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in evs[:1200]))
    (d / "part-1.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in evs[1200:]))
    return d


def test_env_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    from attnrec.settings import load_settings

    monkeypatch.setenv("ATTNREC_TRAIN_EPOCHS", "7")
    monkeypatch.setenv("ATTNREC_DATA_FORMAT", "s3")
    args = build_parser().parse_args(["train", "--data", "x", "--out", "y"])
    s = load_settings(args._settings, **{k: getattr(args, k) for k in args._flags if getattr(args, k) is not None})
    assert s.train_epochs == 7 and s.data_format == "s3" and s.train_max_len is None


#: The flags of attnrec train / eval before the options were generated (docs/BENCHMARKS.md's commands use them).
OLD_FLAGS = ("--max-len", "--d-model", "--blocks", "--heads", "--dropout", "--block", "--epochs", "--patience",
             "--batch-size", "--lr", "--lr-decay", "--lr-patience", "--output-dropout", "--ema", "--weight-decay",
             "--label-smoothing", "--denoise", "--denoise-weight", "--drop-hardest", "--loss", "--negatives",
             "--negatives-per", "--max-minutes", "--bucket", "--no-types", "--no-gaps", "--threads", "--seed", "--data",
             "--format", "--quiet")


def _flags(command: str) -> set[str]:
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    return {o for a in sub.choices[command]._actions for o in a.option_strings}  # type: ignore[index]


def test_training_options_are_declared_once_in_the_configs() -> None:
    """Every option field of ModelConfig / TrainConfig is a setting with the field's bounds and
    choices and a flag of train and eval (id_dropout: train only, with --items); the flags and
    variables of before are all still there, and nothing but the options became one."""
    from attnrec.training.config import ModelConfig, TrainConfig, options
    from attnrec.training.settings import TrainingSettings

    train, evl = _flags("train"), _flags("eval")
    assert set(OLD_FLAGS) <= train and set(OLD_FLAGS) <= evl
    assert {"--out", "--items", "--id-dropout"} <= train and not {"--out", "--items", "--id-dropout"} & evl
    mapping = {"n_blocks": "blocks", "n_heads": "heads", "n_negatives": "negatives", "bucket_batches": "bucket"}
    declared = set()
    for cls in (ModelConfig, TrainConfig):
        for name, opt, _ in options(cls):
            setting = "train_" + mapping.get(name, name)
            declared.add(setting)
            f = TrainingSettings.model_fields[setting]
            bounds = {k: getattr(m, k) for m in f.metadata for k in ("ge", "gt", "le", "lt") if getattr(m, k, None) is not None}
            assert bounds == {k: getattr(opt, k) for k in ("ge", "gt", "le", "lt") if getattr(opt, k) is not None}, name
            assert f.description and opt.help in f.description, name
            if opt.choices:
                assert str(opt.choices[0]) in str(f.annotation), name
    assert {"train_max_len", "train_blocks", "train_negatives", "train_bucket", "train_max_minutes", "train_seed",
            "train_threads", "train_id_dropout"} <= declared
    generated = {n for n in TrainingSettings.model_fields if n.startswith("train_")}
    assert generated - declared == {"train_out", "train_no_types", "train_no_gaps", "train_items", "train_allocator"}
    assert not {"train_val_max_users", "train_all_windows", "train_d_ff", "train_positions"} & generated


def test_a_flag_sets_its_config_field_and_the_config_checks_the_same_bounds() -> None:
    from attnrec.training.cli import configs
    from attnrec.training.config import TrainConfig
    from attnrec.training.data import dataset_from_events
    from attnrec.training.settings import TrainingSettings

    ds = dataset_from_events(generate(40, 30, 1200, seed=3), "tiny")
    args = build_parser().parse_args(["eval", "--blocks", "3", "--negatives", "64", "--bucket", "--max-minutes", "2",
                                      "--loss", "sampled", "--seed", "5"])
    s = TrainingSettings(**{k: getattr(args, k) for k in args._flags if getattr(args, k) is not None})
    mcfg, tcfg = configs(s, ds)
    assert (mcfg.n_blocks, tcfg.n_negatives, tcfg.bucket_batches, tcfg.max_minutes, tcfg.loss, tcfg.seed) == (
        3, 64, True, 2.0, "sampled", 5)
    with pytest.raises(AssertionError, match="lr_decay must be > 0 and <= 1, got 1.5"):
        TrainConfig(lr_decay=1.5)


def test_smoke_train_then_eval(events: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ckpt"
    assert _run(["train", "--data", str(events), "--format", "events", "--out", str(out), "--epochs", "3",
                 "--max-len", "20", "--quiet"]) == 0
    for name in ("config.json", "model.pt", "vocab.json", "metrics.json", "curve.png", "popularity.json",
                 "samples.json"):
        assert (out / name).is_file(), name
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model"]["max_len"] == 20 and cfg["model"]["n_event_types"] == len(EVENT_TYPES) + 1 and cfg["model"]["n_gap_buckets"] == 32
    assert len(cfg["data_fingerprint"]) == 64 and cfg["train"]["epochs"] == 3
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["protocol"] == "loo-full-ranking" and len(metrics["curve"]) == 3
    assert METRIC_KEYS <= set(metrics["test"]) and METRIC_KEYS <= set(metrics["val"])
    vocab = json.loads((out / "vocab.json").read_text())
    assert len(vocab["items"]) + 2 == cfg["model"]["n_items"] and vocab["event_types"][0] == "other"
    samples = json.loads((out / "samples.json").read_text())
    assert 0 < len(samples) <= 256 and all(len(s["items"]) == len(s["types"]) == len(s["gaps"]) for s in samples)
    assert all(0 < len(s["items"]) <= 20 and min(s["items"]) >= 2 for s in samples)
    assert 0 < len(json.loads((out / "popularity.json").read_text())) <= 100

    from attnrec.training.checkpoint import load_checkpoint

    model, cfg2, vocab2 = load_checkpoint(out)
    assert cfg2 == cfg and vocab2 == vocab and not model.training
    capsys.readouterr()

    res_file = tmp_path / "eval.json"
    assert _run(["eval", "--model", str(out), "--data", str(events), "--format", "events", "--json",
                 str(res_file)]) == 0
    res = json.loads(res_file.read_text())
    assert EVAL_KEYS <= set(res) and METRIC_KEYS == set(res["metrics"])
    assert res["protocol"] == "loo-full-ranking" and res["users"] == 80 and res["items"] == len(vocab["items"])
    assert res["metrics"] == pytest.approx({k: metrics["test"][k] for k in METRIC_KEYS})

    pop_file = tmp_path / "pop.json"
    assert _run(["eval", "--baseline", "popular", "--data", str(events), "--format", "events", "--json",
                 str(pop_file)]) == 0
    pop = json.loads(pop_file.read_text())
    assert EVAL_KEYS <= set(pop) and pop["config"] == {"baseline": "popular"} and pop["users"] == 80
