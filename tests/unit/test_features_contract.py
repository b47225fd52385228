"""The online worker computes model features from the manifest alone; they must equal what
training computed (training/features.py) for the same events."""

from __future__ import annotations

import numpy as np
import pytest
from attnrec.training.features import gap_bucket

from attnrec.manifest import N_GAP_BUCKETS, gap_boundaries_ms


@pytest.mark.parametrize("gap_ms", [0, 1, 999, 1000, 1001, 2999, 3000, 7_000, 86_400_000, 10**12])
def test_manifest_boundaries_reproduce_training_buckets(gap_ms: int) -> None:
    b = np.asarray(gap_boundaries_ms(N_GAP_BUCKETS))
    assert gap_bucket(gap_ms) == 1 + int(np.searchsorted(b, gap_ms, side="right"))
