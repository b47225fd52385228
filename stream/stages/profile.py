"""Where a batch's time goes, in process: :class:`ProfileStage` (the benchmark's stage profile).

Wall and thread-CPU seconds per step of the core (``STEPS`` of the processor: parse, Redis,
inputs, model, recommend, serialize, store), and per configured stage, each stage's hooks
apart: the time a stage spends inside a step is charged to the stage, not to the step. Only
the benchmark builds it (``attnrec bench`` in process); a serving worker never has it.
"""

from __future__ import annotations

import time

from ..core.processor import STEPS
from ..core.stage import Batch, Stage, Stages

__all__ = ["ProfileStage"]


class ProfileStage(Stage):
    name = "profile"

    def __init__(self) -> None:
        self.steps = STEPS[1:]
        self.reset()

    def reset(self) -> None:
        self.wall = dict.fromkeys(self.steps, 0.0)
        self.cpu = dict.fromkeys(self.steps, 0.0)
        self.stage_wall: dict[str, float] = {}
        self.stage_cpu: dict[str, float] = {}
        self.events = 0
        self._t = self._c = self._in_w = self._in_c = 0.0

    def attach(self, stages: Stages) -> None:
        """Charge every other stage's hooks to that stage."""
        stages.time_each(self.charge)

    def charge(self, stage: str, wall: float, cpu: float) -> None:
        self.stage_wall[stage] = self.stage_wall.get(stage, 0.0) + wall
        self.stage_cpu[stage] = self.stage_cpu.get(stage, 0.0) + cpu
        self._in_w += wall
        self._in_c += cpu

    def step(self, batch: Batch, name: str) -> None:
        t, c = time.perf_counter(), time.thread_time()
        if name != "start":
            self.wall[name] += t - self._t - self._in_w
            self.cpu[name] += c - self._c - self._in_c
            if name == "store_recs":  # the last step of a batch with events
                self.events += len(batch.records)
        self._t, self._c, self._in_w, self._in_c = t, c, 0.0, 0.0
