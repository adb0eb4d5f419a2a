"""Per-trial early stopping: a trial ends once its objective stops improving.

Checked at the task's evaluation points, after the pruner (a trial the pruner
stops is pruned; one that merely stops improving completes with its last
evaluation, which is what its saved model scores).

The validation loss is watched beside the objective: a trial goes on while
either improves. A coarse objective can stand still while the model still
learns (BLEU at 0 on short targets until whole words come out right, accuracy
on a small validation set), and stopping there would judge the trial by an
unfinished model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

LOSS = "val_loss"


@dataclass
class Plateau:
    """Counts evaluations in which no watched metric improved by more than ``min_delta``.

    ``watched`` maps each metric to True when higher is better.
    """

    watched: dict[str, bool]
    patience: int
    min_delta: float = 0.0
    best: dict[str, float] = field(default_factory=dict)
    waited: int = 0

    @classmethod
    def of_objective(
        cls, metric: str, maximize: bool, patience: int, min_delta: float = 0.0
    ) -> Plateau:
        """Watch ``metric`` and, when it is another metric, the validation loss."""
        watched = {metric: maximize} if metric == LOSS else {metric: maximize, LOSS: False}
        return cls(watched, patience, min_delta)

    def reached(self, metrics: dict[str, float]) -> bool:
        """Record one evaluation; True once ``patience`` evaluations in a row brought nothing."""
        improved = [self._improves(name, metrics.get(name)) for name in self.watched]
        self.waited = 0 if any(improved) else self.waited + 1
        return self.waited >= self.patience

    def _improves(self, name: str, value: float | None) -> bool:
        if value is None or not math.isfinite(value):
            return False
        best = self.best.get(name)
        gain = math.inf if best is None else (value - best if self.watched[name] else best - value)
        if gain > self.min_delta:
            self.best[name] = value
            return True
        return False
