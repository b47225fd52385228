"""Team-draft interleaving of two model versions, and the statistics of who wins.

For a user in the experiment (a stable hash of the user id below ``INTERLEAVE_FRACTION``) the
worker merges the serving model's list (team ``serving``) and the candidate's (team
``candidate``) by team draft (Radlinski, Kurup & Joachims, CIKM 2008): in each round a coin
decides which team picks first, and each team adds its highest-ranked item not yet taken. The
coin is seeded by the trigger event's id, so a replayed event merges the same way. Every item of
the published list carries its ``team``.

Credit: the user's next positive event is a click on the list when its item is in it; the team
that contributed that item wins the impression (at most one team can: the list has no
duplicates); no click on the list is no preference. The win rate is
``candidate / (candidate + serving)`` over impressions with a preference. Its 95 % interval is
a confidence *sequence* (Robbins' normal mixture, Howard et al. 2021: ``|S_n| < sqrt((n/4 + ρ)
log((n/4 + ρ) / (ρ α²)))`` for the sum of ``n`` centred Bernoulli draws), valid at every ``n`` at
once: operators watch the dashboard and stop when it says so, and a fixed-``n`` interval (Wilson)
watched like that declares a winner between two copies of one model far more often than 5 %
of the time. The candidate is better (or worse) with 95 % confidence when the interval lies
above (or below) one half.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["TEAMS", "unit_hash", "in_experiment", "team_draft", "credit", "WinRate", "win_rate"]

TEAMS = ("serving", "candidate")
#: The normal mixture's width: the interval is tightest around ``n / 4 ≈ RHO`` preferences.
RHO = 10.0


def unit_hash(text: str) -> float:
    """A stable number in [0, 1) from ``text`` (not Python's per-process hash)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") / 2.0**64


def in_experiment(user_id: str, fraction: float) -> bool:
    """True for a stable ``fraction`` of users (the same users in every worker and restart)."""
    return fraction > 0 and (fraction >= 1 or unit_hash("interleave|" + user_id) < fraction)


def team_draft(serving: Sequence[str], candidate: Sequence[str], k: int, seed: str) -> list[tuple[str, str]]:
    """The first ``k`` (item, team) of the team-draft merge of two ranked lists; the coin of each
    round comes from ``seed``. A team whose list is used up stops picking; the other goes on."""
    rng = random.Random(seed)
    lists = {"serving": list(serving), "candidate": list(candidate)}
    pos = dict.fromkeys(TEAMS, 0)
    taken: set[str] = set()
    out: list[tuple[str, str]] = []

    def pick(team: str) -> bool:
        lst = lists[team]
        while pos[team] < len(lst) and lst[pos[team]] in taken:
            pos[team] += 1
        if pos[team] >= len(lst):
            return False
        item = lst[pos[team]]
        taken.add(item)
        out.append((item, team))
        return True

    while len(out) < k:
        first = TEAMS[rng.random() < 0.5]
        order = (first, TEAMS[first == "serving"])
        picked = False
        for team in order:
            if len(out) < k and pick(team):
                picked = True
        if not picked:
            break
    return out


def credit(merged: Sequence[tuple[str, str]], clicked_item: str) -> str | None:
    """The team credited with a click on ``clicked_item`` (None: not in the list)."""
    for item, team in merged:
        if item == clicked_item:
            return team
    return None


@dataclass(frozen=True)
class WinRate:
    serving: int  # impressions won by the serving model
    candidate: int  # impressions won by the candidate
    rate: float | None  # candidate / (candidate + serving)
    low: float | None  # 95 % Wilson interval
    high: float | None

    @property
    def verdict(self) -> str:
        """``candidate`` or ``serving`` when one wins with 95 % confidence, else ``undecided``."""
        if self.low is not None and self.low > 0.5:
            return "candidate"
        if self.high is not None and self.high < 0.5:
            return "serving"
        return "undecided"

    def to_dict(self) -> dict[str, object]:
        return {"serving_wins": self.serving, "candidate_wins": self.candidate, "win_rate": self.rate,
                "ci95": [self.low, self.high], "verdict": self.verdict}


def win_rate(serving_wins: int, candidate_wins: int, alpha: float = 0.05, rho: float = RHO) -> WinRate:
    """The candidate's win rate over impressions with a preference, with its always-valid
    ``1 - alpha`` interval (:data:`RHO`)."""
    n = serving_wins + candidate_wins
    if n == 0:
        return WinRate(serving_wins, candidate_wins, None, None, None)
    p = candidate_wins / n
    v = n / 4 + rho  # a win is a Bernoulli draw: sub-Gaussian with variance at most 1/4
    half = math.sqrt(v * math.log(v / (rho * alpha * alpha))) / n
    return WinRate(serving_wins, candidate_wins, p, max(0.0, p - half), min(1.0, p + half))
