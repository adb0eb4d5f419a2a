"""Per-trial early stopping: a trial ends once its objective stops improving.

Checked at the task's evaluation points, after the pruner (a trial the pruner
stops is pruned; one that merely stops improving completes with its last
evaluation, which is what its saved model scores).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Plateau:
    """Counts evaluations without an improvement of more than ``min_delta``."""

    metric: str
    maximize: bool
    patience: int
    min_delta: float = 0.0
    best: float | None = None
    waited: int = 0

    def reached(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True once ``patience`` evaluations in a row brought nothing."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            self.waited += 1
        elif self.best is None or self._better(value):
            self.best, self.waited = value, 0
        else:
            self.waited += 1
        return self.waited >= self.patience

    def _better(self, value: float) -> bool:
        assert self.best is not None
        gain = value - self.best if self.maximize else self.best - value
        return gain > self.min_delta
