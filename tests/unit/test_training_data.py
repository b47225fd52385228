"""Training data: loaders (and their errors), vocabulary, leave-one-out split, metrics, synth."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from attnrec.training.data import Vocab, dataset_from_events, load_dataset, read_events
from attnrec.training.evaluate import evaluate, rank_metrics
from attnrec.training.features import N_GAP_BUCKETS, OOV, PAD, encode_events, gap_bucket, left_pad, type_index
from attnrec.training.sim.synth import generate, generate_planted
from attnrec.training.train import training_arrays

from attnrec.errors import DataError
from attnrec.events import ClickEvent

REPO = Path(__file__).resolve().parents[2]
DATA_DIR = Path(os.environ.get("ATTNREC_DATA_DIR", REPO.parent / "shared" / "data"))


def _s3(tmp_path: Path, text: str, name: str = "d.txt") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


# ------------------------------------------------------------------ loaders on malformed input


def test_s3_non_integer_id_names_file_and_line(tmp_path: Path) -> None:
    p = _s3(tmp_path, "1 5 6 7\n2 8 x9 10\n", "bad.txt")
    with pytest.raises(DataError, match=r"bad\.txt:2: id 'x9'"):
        load_dataset(p, "s3")


def test_s3_user_without_items_and_duplicate_user(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"short\.txt:3: expected at least 2"):
        load_dataset(_s3(tmp_path, "1 5 6\n2 7 8\n3\n", "short.txt"), "s3")
    with pytest.raises(DataError, match=r"dup\.txt: user '1' appears twice \(lines 1 and 2\)"):
        load_dataset(_s3(tmp_path, "1 5 6\n1 7 8\n", "dup.txt"), "s3")


def test_jsonl_bad_lines_name_file_and_line(tmp_path: Path) -> None:
    good = {"event_id": "e1", "user_id": "u1", "item_id": "a", "event_type": "view", "ts": 1}
    p = tmp_path / "ev.jsonl"
    p.write_text(json.dumps(good) + "\n\n{not json\n")
    with pytest.raises(DataError, match=r"ev\.jsonl:3: not JSON"):
        read_events(p)
    bad = dict(good, event_id="e2")
    del bad["ts"]
    p.write_text(json.dumps(good) + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=r"ev\.jsonl:2: invalid event: missing field 'ts'"):
        read_events(p)


def test_csv_missing_column_and_bad_row(tmp_path: Path) -> None:
    p = tmp_path / "ev.csv"
    p.write_text("user_id,item_id,event_type\nu1,a,view\n")
    with pytest.raises(DataError, match=r"ev\.csv:1: CSV header lacks column\(s\) ts"):
        read_events(p)
    p.write_text("user_id,item_id,ts,event_type\nu1,a,1000,view\nu1,,2000,view\n")
    with pytest.raises(DataError, match=r"ev\.csv:3: invalid event: field 'item_id' is empty"):
        read_events(p)


def test_gsasrec_inconsistent_split(tmp_path: Path) -> None:
    for sub in ("train", "val", "test"):
        (tmp_path / sub).mkdir()
    (tmp_path / "train/input.txt").write_text("1 2 3\n4 5 6\n")
    (tmp_path / "val/input.txt").write_text("9 9 9 9\n")
    (tmp_path / "val/output.txt").write_text("7\n")
    (tmp_path / "test/output.txt").write_text("8\n9\n")
    with pytest.raises(DataError, match=r"val/input\.txt:1: input does not extend any line"):
        load_dataset(tmp_path, "gsasrec")
    (tmp_path / "val/input.txt").write_text("4 5 6 1\n")
    ds = load_dataset(tmp_path, "gsasrec")
    u, cut = ds.test[0]
    assert ds.val == [(1, 4)] and ds.test == [(1, 5)] and ds.train_len == [3, 3]
    assert ds.vocab.item_id(ds.users[u].items[cut]) == "9"  # test/output line 2
    assert ds.vocab.item_id(ds.users[u].items[cut - 1]) == "7"  # the validation target is in the test input


def test_directory_of_jsonl_and_duplicate_event_ids(tmp_path: Path) -> None:
    evs = list(generate(5, 20, 60, seed=3))
    (tmp_path / "a.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in evs[:40]))
    (tmp_path / "b.jsonl").write_bytes(b"".join(e.to_json() + b"\n" for e in evs[30:]))  # 10 redelivered
    ds = load_dataset(tmp_path, "events")
    assert sum(len(u.items) for u in ds.users) == 60
    for u in ds.users:
        assert u.types is not None and u.gaps is not None and all(t > 0 for t in u.types)


# ------------------------------------------------------------------ vocabulary and features


def test_vocab_round_trip_and_reserved_indices() -> None:
    v = Vocab(["sku-3", "sku-1", "sku-2"])
    assert v.n_items == 5 and v.index("sku-3") == 2 and v.index("nope") == OOV
    assert [v.item_id(i) for i in range(5)] == [None, None, "sku-3", "sku-1", "sku-2"]
    v2 = Vocab.from_dict(json.loads(json.dumps(v.to_dict())))
    assert v2.items == v.items and v2.event_types == v.event_types and v2.index("sku-2") == 4
    with pytest.raises(DataError, match="duplicate"):
        Vocab(["a", "a"])


def test_features_are_torch_free_and_consistent() -> None:
    code = "import sys, training.features, training.cli; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    assert gap_bucket(None) == 0 and gap_bucket(-5) == 0 and gap_bucket(0) == 1 and gap_bucket(999) == 1
    assert gap_bucket(1000) == 2 and gap_bucket(10**15) == N_GAP_BUCKETS - 1
    assert all(gap_bucket(a) <= gap_bucket(b) for a, b in zip(range(0, 10**7, 7919), range(7919, 10**7, 7919), strict=False))
    assert type_index("other") == 1 and type_index("purchase") == 6 and type_index("weird") == 1
    assert left_pad([1, 2, 3], 5) == [PAD, PAD, 1, 2, 3] and left_pad([1, 2, 3], 2) == [2, 3]
    items, types, gaps = encode_events(["a", "zz"], ["view", "cart"], [0, 5000], {"a": 2}, 4)
    assert items == [0, 0, 2, OOV] and types == [0, 0, 2, 5] and gaps == [0, 0, 0, gap_bucket(5000)]


# ------------------------------------------------------------------ split: no leakage


def _check_no_leakage(ds) -> None:  # type: ignore[no-untyped-def]
    val, test = dict(ds.val), dict(ds.test)
    for u, s in enumerate(ds.users):
        if u in test:
            assert val[u] == test[u] - 1 and test[u] == len(s.items) - 1
            assert ds.train_len[u] <= val[u], "training data reaches a validation/test target"
    items, _, _, targets = training_arrays(ds, 50)
    # every training row is a prefix of the user's training events only
    rows = [s.items[: n] for s, n in zip(ds.users, ds.train_len, strict=True) if n >= 2]
    for r, full in zip(range(len(items)), rows, strict=True):
        seq = [x for x in items[r] if x] + [int(targets[r][-1])]
        assert seq == full[-len(seq):]


def test_loo_split_has_no_leakage(tmp_path: Path) -> None:
    p = _s3(tmp_path, "1 5 6 7 8\n2 9 10 11\n3 12 13\n")
    ds = load_dataset(p, "s3")
    assert ds.val == [(0, 2), (1, 1)] and ds.test == [(0, 3), (1, 2)]  # user 3 is too short: training only
    assert ds.train_len == [2, 1, 2]
    _check_no_leakage(ds)


def test_beauty_split_has_no_leakage() -> None:
    path = DATA_DIR / "amazon-beauty" / "Beauty.txt"
    assert path.is_file(), f"{path} not present: set ATTNREC_DATA_DIR to the shared data directory"
    ds = load_dataset(path, "s3")
    assert ds.stats()["users"] == 22363 and len(ds.vocab.items) == 12101
    _check_no_leakage(ds)


# ------------------------------------------------------------------ metrics


def test_rank_metrics_hand_computed() -> None:
    m = rank_metrics([0, 1, 5, 10, 25], ks=(10, 20))
    assert m["hr@10"] == pytest.approx(3 / 5) and m["hr@20"] == pytest.approx(4 / 5)
    assert m["ndcg@10"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7)) / 5)
    assert m["ndcg@20"] == pytest.approx((1 + 1 / math.log2(3) + 1 / math.log2(7) + 1 / math.log2(12)) / 5)


def test_evaluate_excludes_seen_items_pad_and_oov(tmp_path: Path) -> None:
    # items "1".."6" -> indices 2..7; user: 1 2 3 4 5 (val target 4, test target 5)
    ds = load_dataset(_s3(tmp_path, "1 1 2 3 4 5\n2 6 1 5\n"), "s3")
    # the scorer loves PAD, OOV and the seen items most, then the test target (index 6), then the rest
    base = torch.tensor([100.0, 99.0, 50.0, 49.0, 48.0, 47.0, 10.0, 5.0])

    def scorer(items, types, gaps):  # type: ignore[no-untyped-def]
        return base.unsqueeze(0).expand(items.shape[0], -1)

    res = evaluate(scorer, ds, "test", 10, ks=(1, 10), return_ranks=True)
    # user 1: seen {2,3,4,5} and PAD/OOV excluded -> target 6 is first
    # user 2: input "6","1" (indices 7, 2) -> target "5" (index 6) ranks after 3, 4, 5 -> rank 3
    assert res["ranks"] == [0, 3]
    assert res["hr@1"] == 0.5 and res["ndcg@10"] == pytest.approx((1 + 1 / math.log2(5)) / 2)
    assert res["users"] == 2 and 0 < res["coverage@10"] <= 1


# ------------------------------------------------------------------ synthetic generator


def test_synth_deterministic_ordered_unique_and_planted_causes_are_past_events() -> None:
    a = list(generate_planted(50, 100, 3000, seed=5))
    b = list(generate_planted(50, 100, 3000, seed=5))
    assert [e.to_dict() for e, _ in a] == [e.to_dict() for e, _ in b]
    assert len(a) == 3000 and len({e.event_id for e, _ in a}) == 3000
    ts = [e.ts for e, _ in a]
    assert ts == sorted(ts)
    seen: dict[str, str] = {}
    planted = 0
    for e, causes in a:
        for c in causes:
            assert seen[c] == e.user_id  # an earlier event of the same user
            planted += 1
        seen[e.event_id] = e.user_id
    assert 0.3 < planted / len(a) < 0.8
    assert all(e.item_id.startswith("sku-") and e.user_id.startswith("u") for e, _ in a)
    ds = dataset_from_events((e for e, _ in a), "synth")
    assert ds.has_types and ds.has_time and np.mean([len(u.items) for u in ds.users]) == 60


def test_all_windows_cover_every_training_target_once(tmp_path: Path) -> None:
    ds = load_dataset(_s3(tmp_path, "1 " + " ".join(str(i) for i in range(10, 33)) + "\n2 5 6 7 8\n"), "s3")
    items, _, _, targets = training_arrays(ds, 5, all_windows=True)
    got = sorted(int(t) for row in targets for t in row if t)
    want = sorted(x for s, n in zip(ds.users, ds.train_len, strict=True) for x in s.items[1:n])
    assert got == want and items.shape[1] == 5
    assert len(training_arrays(ds, 5)[0]) == 2  # default: only the newest window per user


def test_holdout_split_validates_a_share_of_users_whatever_the_order() -> None:
    evs = [ClickEvent(f"e{k}", f"s{k // 3}", f"i{k % 7}", "click", 1_396_310_400_000 + 1000 * k) for k in range(3000)]  # 1,000 sessions of 3
    ds = dataset_from_events(evs, "t", holdout=0.2)
    held = {ds.users[u].user_id for u, _ in ds.val}
    assert 150 < len(held) < 250 and ds.test == []
    assert all(ds.train_len[u] == 2 and cut == 2 for u, cut in ds.val)
    assert sum(ds.train_len) == 3000 - len(held)  # everything else is trained on
    again = dataset_from_events(list(reversed(evs)), "t", holdout=0.2)
    assert {again.users[u].user_id for u, _ in again.val} == held
    assert [u.user_id for u in again.users] == [u.user_id for u in ds.users]  # the canonical user order
    loo = dataset_from_events(evs, "t")
    assert sum(loo.train_len) == 1000 and len(loo.val) == len(loo.test) == 1000  # two of three held out
