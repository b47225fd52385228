"""The noise injector (training/noise.py): seeded, the share asked for, targets untouched, the
injected positions recorded; and ``--noise`` out of range is one line naming the setting."""

from __future__ import annotations

import numpy as np
import pytest
from attnrec.apps.cli import main
from attnrec.training.data import Dataset, dataset_from_events
from attnrec.training.noise import inject_noise, injected_mask, n_injected
from attnrec.training.sim.synth import generate


@pytest.fixture(scope="module")
def ds() -> Dataset:
    return dataset_from_events(generate(60, 50, 2400, seed=3), "tiny")


def _without(xs: list, positions: list[int]) -> list:
    drop = set(positions)
    return [x for i, x in enumerate(xs) if i not in drop]


def test_same_seed_same_noise_other_seed_other_noise(ds: Dataset) -> None:
    a, ia = inject_noise(ds, 0.2, seed=1)
    b, ib = inject_noise(ds, 0.2, seed=1)
    c, ic = inject_noise(ds, 0.2, seed=2)
    assert [u.items for u in a.users] == [u.items for u in b.users] and ia.injected == ib.injected
    assert [u.items for u in a.users] != [u.items for u in c.users] and ia.injected != ic.injected
    assert [len(u.items) for u in a.users] == [len(u.items) for u in c.users]  # same counts, other places


@pytest.mark.parametrize("p", [0.1, 0.2, 0.3])
def test_injected_share_is_p_within_rounding(ds: Dataset, p: float) -> None:
    noisy, info = inject_noise(ds, p, seed=5)
    for u, (n_clean, n_noisy) in enumerate(zip(ds.train_len, noisy.train_len, strict=True)):
        k = len(info.injected[u])
        assert n_noisy == n_clean + k and k == n_injected(n_clean, p)
        assert abs(k / n_noisy - p) <= 0.5 / n_noisy + 1e-9  # one event of rounding
    assert info.n_injected / sum(noisy.train_len) == pytest.approx(p, abs=0.01)
    assert noisy.users[0].items is not ds.users[0].items and len(ds.users[0].items) == ds.train_len[0] + 2  # input intact


def test_targets_are_untouched_and_last(ds: Dataset) -> None:
    noisy, info = inject_noise(ds, 0.3, seed=9)
    for split in ("val", "test"):
        for (u, cut), (u2, cut2) in zip(ds.split(split), noisy.split(split), strict=True):
            assert u == u2 and noisy.users[u].items[cut2] == ds.users[u].items[cut]
            assert all(p < cut2 for p in info.injected[u])  # noise only in the input, before the target
    for u, s in enumerate(noisy.users):
        orig = ds.users[u]
        n = noisy.train_len[u]
        assert s.items[n:] == orig.items[ds.train_len[u]:]  # val and test targets: same items, still last
        assert noisy.test[-1][1] == len(noisy.users[noisy.test[-1][0]].items) - 1


def test_injected_positions_are_recorded(ds: Dataset) -> None:
    noisy, info = inject_noise(ds, 0.25, seed=4)
    n_items = ds.vocab.n_items
    for u, s in enumerate(noisy.users):
        pos = info.injected[u]
        assert pos == sorted(set(pos)) and all(0 <= p < noisy.train_len[u] for p in pos)
        # removing the recorded positions gives back the user's own events, in order, for every feature
        orig = ds.users[u]
        for field in ("items", "types", "gaps", "event_ids"):
            assert _without(getattr(s, field), pos) == getattr(orig, field), field
        assert all(2 <= s.items[p] < n_items for p in pos)  # never PAD or OOV
        assert all(s.event_ids[p].startswith("noise-") for p in pos)  # type: ignore[index]
        assert not any(s.event_ids[i].startswith("noise-") for i in range(len(s.items)) if i not in set(pos))  # type: ignore[index]
    items = np.concatenate([[s.items[p] for p in pos] for s, pos in zip(noisy.users, info.injected, strict=True)])
    assert len(np.unique(items)) > 0.6 * (n_items - 2)  # spread over the catalogue, not a few items


def test_no_noise_is_the_same_data(ds: Dataset) -> None:
    noisy, info = inject_noise(ds, 0.0, seed=1)
    assert [u.items for u in noisy.users] == [u.items for u in ds.users] and info.n_injected == 0
    assert noisy.val == ds.val and noisy.test == ds.test
    with pytest.raises(ValueError):
        n_injected(10, 1.0)


def test_injected_mask_right_aligns_the_window() -> None:
    from attnrec.training.noise import NoiseInfo

    info = NoiseInfo(p=0.5, seed=0, injected=[[0, 3, 5], [1]])
    # user 0, input = events[:5] -> window of 4: events 1..4 -> injected: 3 (column 2)
    # user 1, input = events[:2] -> window of 4: [pad, pad, 0, 1] -> injected: 1 (column 3)
    m = injected_mask(info, [(0, 5), (1, 2)], 4)
    assert m.tolist() == [[False, False, True, False], [False, False, False, True]]


@pytest.mark.parametrize(("value", "message"), [
    ("1.5", "ATTNREC_EVAL_NOISE (--noise)='1.5': expected a number < 1"),
    ("-0.1", "ATTNREC_EVAL_NOISE (--noise)='-0.1': expected a number >= 0"),
    ("lots", "ATTNREC_EVAL_NOISE (--noise)='lots'"),
])  # fmt: skip
def test_bad_noise_is_one_line_config_error(value: str, message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--baseline", "popular", "--data", "x", "--noise", value]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("attnrec: error: ") and message in lines[0], lines


def test_noise_with_a_checkpoint_trained_elsewhere_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["eval", "--model", "ckpt", "--data", "x", "--noise", "0.2"]) == 2
    lines = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(lines) == 1 and "ATTNREC_EVAL_NOISE=0.2" in lines[0] and "--train or --baseline" in lines[0], lines
