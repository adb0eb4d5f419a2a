"""Pruners of this service beyond Optuna's own.

``calibrated`` starts pruning only where the data says early values mean
something: at a step where the completed trials' values (at that point of
their curves) rank them the way their final values do. Before that, on a
curve that is noise at first (a BERT's accuracy sits at chance for its first
steps), every pruner throws away trials that would have been good.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState


class CalibratedPruner(BasePruner):
    """Defer to ``wrapped`` only at steps whose early values predict the final ones.

    Args:
        wrapped: the pruner that decides once a step is calibrated (median by default).
        min_correlation: the Spearman rank correlation between the completed
            trials' values at the step and their final values that the step needs.
        min_trials: completed trials needed before any step can be calibrated.
    """

    def __init__(
        self,
        wrapped: BasePruner | None = None,
        min_correlation: float = 0.7,
        min_trials: int = 5,
    ) -> None:
        if not -1.0 <= min_correlation <= 1.0:
            raise ValueError(f"min_correlation must be within [-1, 1], got {min_correlation}")
        if min_trials < 3:
            raise ValueError(f"min_trials must be at least 3, got {min_trials}")
        self._wrapped = wrapped if wrapped is not None else optuna.pruners.MedianPruner()
        self._min_correlation = min_correlation
        self._min_trials = min_trials
        # (completed trials seen, step) -> calibrated: the answer only changes
        # when another trial completes.
        self._calibrated: dict[tuple[int, int], bool] = {}

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None:
            return False
        completed = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        key = (len(completed), step)
        if key not in self._calibrated:
            self._calibrated[key] = self.step_correlation(completed, step) >= self._min_correlation
        return self._calibrated[key] and self._wrapped.prune(study, trial)

    def step_correlation(self, completed: Sequence[FrozenTrial], step: int) -> float:
        """Rank correlation of values at ``step`` with final values; -1 when too few trials."""
        early, final = [], []
        for trial in completed:
            value = value_at(trial, step)
            if value is not None and trial.values and math.isfinite(trial.values[0]):
                early.append(value)
                final.append(trial.values[0])
        if len(early) < self._min_trials:
            return -1.0
        return spearman(early, final)


def value_at(trial: FrozenTrial, step: int) -> float | None:
    """The trial's last reported value at or before ``step``."""
    reported = [s for s in trial.intermediate_values if s <= step]
    if not reported:
        return None
    value = trial.intermediate_values[max(reported)]
    return value if math.isfinite(value) else None


def spearman(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Spearman's rank correlation (ties share their mean rank); 0 if either is constant."""
    rx, ry = _ranks(xs), _ranks(ys)
    mean = (len(xs) + 1) / 2
    cov = sum((a - mean) * (b - mean) for a, b in zip(rx, ry, strict=True))
    var_x = sum((a - mean) ** 2 for a in rx)
    var_y = sum((b - mean) ** 2 for b in ry)
    if var_x == 0 or var_y == 0:
        return 0.0
    return cov / math.sqrt(var_x * var_y)


def _ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for i in range(start, end + 1):
            ranks[order[i]] = (start + end) / 2 + 1
        start = end + 1
    return ranks
