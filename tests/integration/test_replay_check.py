"""The served path against the evaluation (apps/served.py): a slice of each public log replayed
through Kafka into a real worker, the periodic trainer retraining and the worker hot-swapping at
the evaluation's cadence; the worker's online counters must agree with the prequential
evaluation of the same events (training/prequential.py) within the stated tolerance, and the
served models must be the ones the evaluation retrained."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from attnrec.apps.served import ReplayCheckSettings, replay_check

from tests.conftest import data_dir
from tests.helpers import settings_for

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("fmt", "path", "start", "every", "end"), [
    # four hours of YOOCHOOSE sessions (~2,700 clicks) after a prefix of ~2,900: the first model (08:00) loses to the
    # popularity fallback, the second (10:00) is promoted and swapped in while the worker runs
    ("yoochoose", "yoochoose-100k/yoochoose-clicks-100k_train_full.txt", "2014-04-01T08:00", "2h", "2014-04-01T12:00"),
    # 6 minutes of Taobao (~4,300 typed events, mostly one per user): retrains each minute from minute 4
    ("taobao", "taobao-timeslice/UserBehavior-timeslice.csv", "2017-11-26T01:04", "1m", "2017-11-26T01:06"),
])
def test_online_counters_agree_with_the_prequential_figures(stack: Any, tmp_path: Path, fmt: str, path: str, start: str,
                                                             every: str, end: str) -> None:
    s = settings_for(stack, {}, tmp_path / "registry", ReplayCheckSettings, home=tmp_path, data=data_dir() / path,
                     data_format=fmt, preq_start=start, preq_every=every, preq_end=end, preq_epochs=5, train_threads=1,
                     preq_resamples=100, check_json=tmp_path / "report.json")
    report = replay_check(s)
    cmp, periods = report["comparison"], report["periods"]
    assert report["same_models"]["equal"], report["same_models"]
    assert cmp["within"], cmp
    assert cmp["sources"]["model"]["coverage"] == 1.0, "every next event scored online, as offline"
    assert len(periods) >= 2
    # a model promoted after the first period was served by the running worker (hot swap)
    swapped = [p for p in periods[1:] if p["decision"] == "promoted"]
    assert swapped and all(p["serving"] == p["version"] for p in swapped), periods
