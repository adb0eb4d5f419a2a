"""Successive halving whose stopped trials can be resumed (``pruner: resumable-sha``).

Asynchronous successive halving judges a trial at rungs: reported steps
``min_resource * reduction_factor**k``. A trial goes on past a rung only if
its value there is among the best ``1/reduction_factor`` of all the
configurations that reached it. Optuna's own ``SuccessiveHalvingPruner``
cannot suspend a trial, so it has to let on the best of the first few trials
at a rung and throw the others away for good, even those that later turn out
to rank well.

Here a trial that is not (yet) among the best at a rung is *paused*: it ends
PRUNED in Optuna with ``hpo.paused_rung`` and its checkpoint kept. When a
worker claims a slot of the study, a paused configuration that has since
become one of the best at its rung is *promoted* first: a continuation trial
is enqueued with the same parameters, seed and trial folder
(``hpo.retry_root``), linked to its parent by ``hpo.continues``, and it
resumes from the parent's checkpoint instead of starting over.

Why a linked continuation and not one trial that goes on: Optuna's states
are final (a PRUNED trial cannot run again), and a paused trial left RUNNING
would hold a ``max_concurrent_trials`` slot, be taken for an orphan by the
reaper and look in flight to the sampler for as long as it waits. A
continuation is an ordinary trial, so leases, retries, budgets, the reaper and
MLflow treat it like any other; the dashboard shows the parent PRUNED at its
rung and the continuation's curve going on from there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import optuna
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_store import (
    ATTR_CONTINUES,
    ATTR_PAUSED_RUNG,
    ATTR_PROMOTED_RUNG,
    ATTR_RETRY_ROOT,
    ATTR_SEED,
    RUNG_ATTR_PREFIX,
    folder_root,
    set_trial_attr,
)
from storage.seeds import trial_seed

# System attribute (a pruner reads it back) with a trial's value at rung k.


class ResumableHalvingPruner(BasePruner):
    """Asynchronous successive halving that pauses instead of discarding.

    Args:
        min_resource: the reported step of the first rung.
        reduction_factor: a trial passes a rung when it ranks within the best
            ``1/reduction_factor`` of the configurations that reached it.
        min_early_stopping_rate: rungs skipped at the start (the first rung is
            then at ``min_resource * reduction_factor**rate``).
    """

    resumable = True

    def __init__(
        self, min_resource: int = 1, reduction_factor: int = 3, min_early_stopping_rate: int = 0
    ) -> None:
        if min_resource < 1:
            raise ValueError(f"min_resource must be at least 1, got {min_resource}")
        if reduction_factor < 2:
            raise ValueError(f"reduction_factor must be at least 2, got {reduction_factor}")
        if min_early_stopping_rate < 0:
            raise ValueError(
                f"min_early_stopping_rate must be at least 0, got {min_early_stopping_rate}"
            )
        self.min_resource = min_resource
        self.reduction_factor = reduction_factor
        self.min_early_stopping_rate = min_early_stopping_rate

    def rung_step(self, rung: int) -> int:
        """The reported step at which ``rung`` judges a trial."""
        exponent = rung + self.min_early_stopping_rate
        return int(self.min_resource * self.reduction_factor**exponent)

    def rung_reached(self, step: int) -> int | None:
        """The highest rung whose step is at or before ``step``; None before the first."""
        if step < self.rung_step(0):
            return None
        rung = 0
        while self.rung_step(rung + 1) <= step:
            rung += 1
        return rung

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        step = trial.last_step
        if step is None or len(study.directions) != 1:
            return False
        rung = self.rung_reached(step)
        if rung is None or rung <= int(trial.user_attrs.get(ATTR_PROMOTED_RUNG, -1)):
            return False
        others = study.get_trials(deepcopy=False)
        if judged_at(others, trial, rung):
            return False  # judged at this rung already, and it went on
        return pause_or_go_on(study, trial, rung, others, self.reduction_factor)


def judged_at(trials: Sequence[FrozenTrial], trial: FrozenTrial, rung: int) -> bool:
    """True when ``trial`` was judged at ``rung`` already (and went on).

    Read from ``trials`` (just read from the storage), not from ``trial``: the
    copy a pruner is given may predate the judgment recorded a report ago.
    """
    fresh = next((t for t in trials if t.number == trial.number), trial)
    return f"{RUNG_ATTR_PREFIX}{rung}" in fresh.system_attrs


def pause_or_go_on(
    study: optuna.Study,
    trial: FrozenTrial,
    rung: int,
    peers: Sequence[FrozenTrial],
    reduction_factor: int,
) -> bool:
    """Judge ``trial`` at ``rung`` among ``peers``; True when it is paused there.

    Its value is recorded at the rung (``hpo.rung_<n>``) for later rankings; it
    goes on when it ranks within the best ``1/reduction_factor`` of the
    configurations at the rung, and is paused otherwise (or when its value is
    not finite).
    """
    # The value of the report that crossed the rung: trials that evaluate
    # at the same steps are compared at the same point of their curves.
    value = trial.intermediate_values.get(trial.last_step) if trial.last_step is not None else None
    if value is None or not math.isfinite(value):
        set_trial_attr(study, trial, ATTR_PAUSED_RUNG, rung)
        return True
    set_trial_attr(study, trial, f"{RUNG_ATTR_PREFIX}{rung}", value, system=True)
    ranked = rung_ranking(peers, rung, study.direction, extra=(folder_root(trial), value))
    if folder_root(trial) in ranked[: len(ranked) // reduction_factor]:
        return False
    set_trial_attr(study, trial, ATTR_PAUSED_RUNG, rung)
    return True


@dataclass(frozen=True)
class Promotion:
    """A paused trial to continue, and the rung it passed."""

    parent: FrozenTrial
    rung: int


Peers = Callable[[Sequence[FrozenTrial], FrozenTrial], Sequence[FrozenTrial]]


def find_promotion(
    trials: Sequence[FrozenTrial],
    direction: StudyDirection,
    reduction_factor: int,
    peers: Peers | None = None,
) -> Promotion | None:
    """The paused trial to continue first, or None.

    Higher rungs first (a configuration closer to the end is worth more), and
    within a rung the best value first; only paused trials that no
    continuation has taken up yet, and only within the best
    ``1/reduction_factor`` of the configurations at their rung among their
    ``peers`` (all trials, or a Hyperband bracket's).
    """
    continued = {t.user_attrs.get(ATTR_CONTINUES) for t in trials}
    paused: dict[int, list[FrozenTrial]] = {}
    for trial in trials:
        rung = trial.user_attrs.get(ATTR_PAUSED_RUNG)
        if is_paused(trial) and rung is not None and trial.number not in continued:
            paused.setdefault(int(rung), []).append(trial)
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    for rung in sorted(paused, reverse=True):
        ranks: list[tuple[float, int, FrozenTrial]] = []
        for trial in paused[rung]:
            ranked = rung_ranking(peers(trials, trial) if peers else trials, rung, direction)
            root = folder_root(trial)
            # Paused on a value that was not finite: its own rung value is missing,
            # though another trial of its folder (an earlier attempt) may rank.
            value = trial.system_attrs.get(f"{RUNG_ATTR_PREFIX}{rung}")
            if isinstance(value, int | float) and root in ranked[: len(ranked) // reduction_factor]:
                ranks.append((sign * float(value), root, trial))
        if ranks:
            return Promotion(min(ranks, key=lambda r: (r[0], r[1]))[2], rung)
    return None


def rung_ranking(
    trials: Sequence[FrozenTrial],
    rung: int,
    direction: StudyDirection,
    extra: tuple[int, float] | None = None,
) -> list[int]:
    """The configurations (trial-folder roots) that reached ``rung``, best first."""
    key = f"{RUNG_ATTR_PREFIX}{rung}"
    values: dict[int, float] = {}
    for trial in trials:
        value = trial.system_attrs.get(key)
        if isinstance(value, int | float) and math.isfinite(value):
            values.setdefault(folder_root(trial), float(value))
    if extra is not None:
        values.setdefault(*extra)
    sign = -1.0 if direction == StudyDirection.MAXIMIZE else 1.0
    return sorted(values, key=lambda root: (sign * values[root], root))


def promote(study: optuna.Study, base_seed: int | None) -> int | None:
    """Enqueue the continuation of the paused trial to promote; return its parent's number.

    The study's pruner says how many go on at a rung (``reduction_factor``)
    and, for Hyperband, which trials a paused one ranks among (``peers``).
    The caller holds the study's row lock, so two workers never promote the
    same trial; a continuation that was enqueued before a crash is found
    (``hpo.continues``) and not enqueued again.
    """
    if len(study.directions) != 1:
        return None
    trials = study.get_trials(deepcopy=False)
    factor = int(getattr(study.pruner, "reduction_factor", 3))
    found = find_promotion(trials, study.direction, factor, getattr(study.pruner, "peers", None))
    if found is None:
        return None
    parent = found.parent
    attrs = {
        ATTR_CONTINUES: parent.number,
        ATTR_RETRY_ROOT: folder_root(parent),
        ATTR_PROMOTED_RUNG: found.rung,
    }
    if (seed := trial_seed(parent, base_seed)) is not None:
        attrs[ATTR_SEED] = seed
    study.enqueue_trial(dict(parent.params), user_attrs=attrs, skip_if_exists=False)
    return parent.number


def passed_rung(trial: FrozenTrial) -> int | None:
    """The highest rung ``trial`` went on past (promoted, or judged and not paused)."""
    rungs = (
        [int(trial.user_attrs[ATTR_PROMOTED_RUNG])]
        if ATTR_PROMOTED_RUNG in trial.user_attrs
        else []
    )
    paused = trial.user_attrs.get(ATTR_PAUSED_RUNG)
    for key in trial.system_attrs:
        if key.startswith(RUNG_ATTR_PREFIX) and key[len(RUNG_ATTR_PREFIX) :].isdigit():
            rung = int(key[len(RUNG_ATTR_PREFIX) :])
            if paused is None or rung != int(paused):
                rungs.append(rung)
    return max(rungs) if rungs else None


def is_paused(trial: FrozenTrial) -> bool:
    """A trial that resumable halving stopped at a rung (it may still be continued)."""
    return trial.state == TrialState.PRUNED and ATTR_PAUSED_RUNG in trial.user_attrs


def is_resumable(pruner: BasePruner) -> bool:
    """True for pruners whose stopped trials keep their checkpoints to be continued."""
    return bool(getattr(pruner, "resumable", False))
