"""The served path against the evaluation (apps/served.py): a slice of a public log replayed
through Kafka into a real worker, the periodic trainer retraining and the worker hot-swapping at
the evaluation's cadence; the worker's online counters must agree with the prequential
evaluation of the same events (training/prequential.py) within the stated tolerance, on every
next event, and the served models must be the ones the evaluation retrained.

One slice of YOOCHOOSE (sessions: a third of next clicks repeat an item, so a user's events come
close together, which the round-by-round replay must keep apart). The whole check on both public
logs is in docs/BENCHMARKS.md (`attnrec replay-check`); a Taobao slice short enough for this
suite scores under a hundred next events, none of them hits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from attnrec.apps.served import ReplayCheckSettings, replay_check

from tests.conftest import data_dir
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


def test_online_counters_agree_with_the_prequential_figures(stack: Any, tmp_path: Path) -> None:
    # an hour of YOOCHOOSE sessions (~700 clicks, ~490 next clicks scored) after a prefix of ~4,200: a first model at
    # 10:00 (promoted over the popularity fallback), a warm-started retrain at 10:30 swapped in while the worker runs
    s = settings_for(stack, {}, tmp_path / "registry", ReplayCheckSettings, home=tmp_path,
                     data=data_dir() / "yoochoose-100k/yoochoose-clicks-100k_train_full.txt", data_format="yoochoose",
                     preq_start="2014-04-01T10:00", preq_every="30m", preq_end="2014-04-01T11:00", preq_epochs=5,
                     train_threads=1, preq_resamples=100, check_json=tmp_path / "report.json")
    report = replay_check(s)
    cmp, periods = report["comparison"], report["periods"]
    assert report["same_models"]["equal"], report["same_models"]
    assert cmp["within"], cmp
    model = cmp["sources"]["model"]
    # every next event scored online, as offline (a batch redone after a pause could count one twice: the verdict's slack)
    assert model["online_events"] >= model["offline_pairs"] > 300, model
    assert model["hr@10"]["offline"] > 0.02, "hits to agree on"
    assert len(periods) == 2
    # a model promoted after the first period was served by the running worker (hot swap)
    swapped = [p for p in periods[1:] if p["decision"] == "promoted"]
    assert swapped and all(p["serving"] == p["version"] for p in swapped), periods
