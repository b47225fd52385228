"""The synthetic demo's warm-up traffic (apps/demo.py): users and events of its own, so the
replay's users, their buffers and the latency reported for them are untouched by it."""

from __future__ import annotations

from attnrec.apps.demo import _warmup_events
from attnrec.apps.demo_kit import fresh_ids
from attnrec.training.sim.synth import generate


def test_warmup_events_are_their_own_users_and_ids() -> None:
    warm = _warmup_events(1500)
    replay = fresh_ids(generate(600, 800, 3000, seed=11))
    assert len(warm) == 1500 and len({e.event_id for e in warm}) == 1500
    assert all(e.user_id.startswith("warmup-") and e.event_id.startswith("warmup-") for e in warm)
    assert not {e.user_id for e in warm} & {e.user_id for e in replay}
    assert not {e.event_id for e in warm} & {e.event_id for e in replay}
    assert len({e.user_id for e in warm}) > 100  # spread over many users, as the replay is
