"""Hyperband over resumable rungs, placed by the task's fidelity (``pruner: auto``).

Successive halving needs one guess: how early a trial may be judged. Too
early and it throws away slow starters, too late and it saves nothing.
Hyperband (Li et al., 2018) does not guess: it runs several halving
*brackets* side by side, from one that judges at the first evaluation to one
that never prunes, and gives each about the same share of the budget.

Here every bracket is :mod:`storage.halving`'s resumable successive halving:
a trial that does not rank at a rung is paused with its checkpoint, and goes
on from there if it ranks later, so no configuration's early steps are ever
trained twice. The rungs are placed from the top down over the fidelity the
task declares for the trial (:data:`ATTR_MAX_STEP`, the reported step of its
last evaluation, and :data:`ATTR_FIRST_STEP`, of its first): the last rung is
``max / reduction_factor``, the one below it ``max / reduction_factor**2``,
and so on while a rung is at or after the first evaluation. A task that
declares nothing gets rungs from ``min_resource`` upwards, as in ASHA.

The study's budget bounds the number of brackets: the most aggressive one
needs ``reduction_factor**rungs`` configurations at its first rung before it
can let any through, so with ``n_trials`` trials (shared by all brackets) it
keeps the largest number of rungs for which that still fits.

A trial's bracket follows from its configuration's folder root (which its
retries and continuations share), drawn with Hyperband's weights: bracket
``b`` (``s = rungs - b`` halvings) gets ``ceil((rungs + 1) / (s + 1) *
reduction_factor**s)`` configurations for each one of the never-pruned bracket.
Configurations are ranked only against their own bracket.

A rung judges nobody until it is shown to predict the end: once at least
``min_trials`` configurations have both a value at the rung's step and a
final result, their Spearman rank correlation must reach ``min_correlation``
(0.5). Every trial records its value at every rung's step, whatever its
bracket, and the never-pruned bracket supplies pairs no pruning has chosen.
On a curve that is noise early on (a model at chance for its first
evaluations, a low fidelity that reorders configurations) the low rungs stay
silent and the study is at worst a plain search with a few late rungs;
where early values rank well, it stops the weak early. (Found on the
multi-fidelity Hartmann functions: at fidelity 4 of 100 the ranking is
largely noise, and halving at that rung lost to plain TPE.)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import optuna
from optuna.pruners import BasePruner
from optuna.trial import FrozenTrial, TrialState

from storage.halving import judged_at, pause_or_go_on
from storage.optuna_store import (
    ATTR_PROMOTED_RUNG,
    RUNG_ATTR_PREFIX,
    folder_root,
    set_trial_attr,
)
from storage.pruners import spearman

# System attributes a task sets at its start (TrialContext.declare_fidelity):
# system, because a pruner is given the trial's user attributes as at the ask.
ATTR_MAX_STEP = "hpo.max_step"
ATTR_FIRST_STEP = "hpo.first_step"
# System attribute ``hpo.level_<k>``: a trial's value where its curve crossed rung k's
# step, whatever its bracket (for measuring how well rung k predicts the end).
LEVEL_ATTR_PREFIX = "hpo.level_"


def declared(trial: FrozenTrial, key: str) -> object:
    """A fidelity the task declared: a system attribute, or a user attribute it set itself."""
    return trial.system_attrs.get(key, trial.user_attrs.get(key))


class AutoPruner(BasePruner):
    """Asynchronous Hyperband whose brackets pause and resume (``pruner: auto``).

    Args:
        reduction_factor: a trial passes a rung within the best
            ``1/reduction_factor`` of its bracket's configurations there.
        max_brackets: at most this many brackets (rungs + 1).
        min_resource: the first rung's step for a task that declares no fidelity.
        n_trials: the study's trial budget (bounds the brackets; set from the spec).
        min_correlation: the rank correlation between values at a rung and
            final values that a rung needs before it judges anyone.
        min_trials: completed configurations needed to measure that correlation.
    """

    resumable = True

    def __init__(
        self,
        reduction_factor: int = 3,
        max_brackets: int = 4,
        *,
        min_resource: int = 1,
        n_trials: int | None = None,
        min_correlation: float = 0.5,
        min_trials: int = 5,
    ) -> None:
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be at least 2, got {reduction_factor}")
        if max_brackets < 1:
            raise ValueError(f"max_brackets must be at least 1, got {max_brackets}")
        if min_resource < 1:
            raise ValueError(f"min_resource must be at least 1, got {min_resource}")
        if n_trials is not None and n_trials < 1:
            raise ValueError(f"n_trials must be at least 1, got {n_trials}")
        if not -1.0 <= min_correlation <= 1.0:
            raise ValueError(f"min_correlation must be within [-1, 1], got {min_correlation}")
        if min_trials < 3:
            raise ValueError(f"min_trials must be at least 3, got {min_trials}")
        self.reduction_factor = reduction_factor
        self.max_brackets = max_brackets
        self.min_resource = min_resource
        self.n_trials = n_trials
        self.min_correlation = min_correlation
        self.min_trials = min_trials
        # (configurations with both values, rung) -> trusted.
        self._trusted: dict[tuple[int, int], bool] = {}

    def rung_levels(self, trial: FrozenTrial) -> list[float]:
        """The steps of the rungs, lowest first, for ``trial``'s declared fidelity."""
        eta = self.reduction_factor
        top = declared(trial, ATTR_MAX_STEP)
        count = min(self.max_brackets - 1, self._rungs_for_budget())
        if not isinstance(top, int | float) or top <= 0:
            return [float(self.min_resource * eta**k) for k in range(count)]
        first = declared(trial, ATTR_FIRST_STEP)
        first = float(first) if isinstance(first, int | float) and first > 0 else 1.0
        # Rungs strictly below the top, at or after the first evaluation.
        fits = math.floor(math.log(top / first, eta) + 1e-9) if top > first else 0
        count = min(count, fits)
        return [top / eta ** (count - k) for k in range(count)]

    def bracket_of(self, trial: FrozenTrial) -> int:
        """The trial's bracket: 0 judges at every rung; ``len(rungs)`` never prunes."""
        rungs = len(self.rung_levels(trial))
        weights = [
            math.ceil((rungs + 1) / (rungs - b + 1) * self.reduction_factor ** (rungs - b))
            for b in range(rungs + 1)
        ]
        draw = zlib.crc32(f"bracket-{folder_root(trial)}".encode()) % sum(weights)
        for bracket, weight in enumerate(weights):
            if draw < weight:
                return bracket
            draw -= weight
        return rungs

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or len(study.directions) != 1:
            return False
        trials = study.get_trials(deepcopy=False)
        # The fidelity was declared after the ask: read it from the stored trial.
        fresh = next((t for t in trials if t.number == trial.number), trial)
        levels, bracket = self.rung_levels(fresh), self.bracket_of(fresh)
        self._record_levels(study, fresh, levels, step)
        crossed = [k for k in range(bracket, len(levels)) if levels[k] <= step]
        if not crossed:
            return False
        rung = crossed[-1]
        if rung <= int(trial.user_attrs.get(ATTR_PROMOTED_RUNG, -1)):
            return False
        if judged_at(trials, trial, rung):
            return False  # judged at this rung already, and it went on
        if not self.rung_trusted(trials, rung):
            # Its value still counts in later rankings at the rung; it goes on.
            value = trial.intermediate_values.get(step, math.nan)
            if math.isfinite(value):
                set_trial_attr(study, trial, f"{RUNG_ATTR_PREFIX}{rung}", value, system=True)
            return False
        return pause_or_go_on(study, trial, rung, self.peers(trials, fresh), self.reduction_factor)

    def rung_trusted(self, trials: Sequence[FrozenTrial], rung: int) -> bool:
        """Whether values at ``rung`` rank configurations as their final values do.

        Spearman's rank correlation over the configurations with a value at
        the rung's level and a completed result must reach ``min_correlation``
        over at least ``min_trials`` of them. Until then a rung judges nobody.
        """
        key = f"{LEVEL_ATTR_PREFIX}{rung}"
        early: dict[int, float] = {}
        final: dict[int, float] = {}
        for trial in trials:
            value = trial.system_attrs.get(key)
            if isinstance(value, int | float):
                early[folder_root(trial)] = float(value)
            done = trial.state == TrialState.COMPLETE and trial.values
            if done and math.isfinite(trial.values[0]):
                final[folder_root(trial)] = trial.values[0]
        roots = sorted(early.keys() & final.keys())
        if len(roots) < self.min_trials:
            return False
        cache = (len(roots), rung)
        if cache not in self._trusted:
            correlation = spearman([early[r] for r in roots], [final[r] for r in roots])
            self._trusted[cache] = correlation >= self.min_correlation
        return self._trusted[cache]

    def _record_levels(
        self, study: optuna.Study, trial: FrozenTrial, levels: list[float], step: int
    ) -> None:
        # Every trial's value where its curve crosses each level, whatever its
        # bracket: the never-pruned bracket gives rung_trusted unbiased pairs.
        earlier = [s for s in trial.intermediate_values if s < step]
        before = max(earlier) if earlier else 0
        value = trial.intermediate_values.get(step, math.nan)
        if not math.isfinite(value):
            return
        for k, level in enumerate(levels):
            key = f"{LEVEL_ATTR_PREFIX}{k}"
            if before < level <= step and key not in trial.system_attrs:
                set_trial_attr(study, trial, key, value, system=True)

    def peers(self, trials: Sequence[FrozenTrial], trial: FrozenTrial) -> list[FrozenTrial]:
        """The trials ranked with ``trial``: those of its bracket."""
        bracket = self.bracket_of(trial)
        return [t for t in trials if self.bracket_of(t) == bracket]

    def _rungs_for_budget(self) -> int:
        if self.n_trials is None:
            return self.max_brackets - 1
        rungs = 0
        while (
            rungs + 1 < self.max_brackets
            and self.reduction_factor ** (rungs + 1) * (rungs + 2) <= self.n_trials
        ):
            rungs += 1
        return rungs
