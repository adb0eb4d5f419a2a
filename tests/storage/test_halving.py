"""Resumable successive halving: pause at a rung, promote the best paused trial later."""

from __future__ import annotations

import optuna
import pytest

from storage.halving import (
    ResumableHalvingPruner,
    find_promotion,
    is_paused,
    passed_rung,
    promote,
    rung_ranking,
)
from storage.optimizers import check_pruner
from storage.optuna_store import (
    ATTR_CONTINUES,
    ATTR_PAUSED_RUNG,
    ATTR_PROMOTED_RUNG,
    ATTR_RETRY_ROOT,
    ATTR_SEED,
)
from storage.spec import StudySpec


def _study() -> optuna.Study:
    pruner = ResumableHalvingPruner(min_resource=1, reduction_factor=3)
    return optuna.create_study(direction="maximize", pruner=pruner)


def _run_to_first_rung(study: optuna.Study, value: float) -> tuple[optuna.Trial, bool]:
    """A new trial reports ``value`` at step 1 (the first rung); pruned trials are told so."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(ATTR_SEED, 100 + trial.number)
    trial.report(value, 1)
    pruned = trial.should_prune()
    if pruned:
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)
    return trial, pruned


def test_rungs_grow_by_the_reduction_factor() -> None:
    pruner = ResumableHalvingPruner(min_resource=2, reduction_factor=3, min_early_stopping_rate=1)
    assert [pruner.rung_step(r) for r in range(3)] == [6, 18, 54]
    assert pruner.rung_reached(5) is None
    assert pruner.rung_reached(6) == 0
    assert pruner.rung_reached(53) == 1
    assert pruner.rung_reached(54) == 2


def test_pauses_until_a_trial_ranks_among_the_best_third() -> None:
    study = _study()
    # Fewer than three configurations at the rung: nobody is in the best third yet.
    # Optuna's SuccessiveHalvingPruner would let the best of them go on instead.
    _, first = _run_to_first_rung(study, 0.5)
    _, second = _run_to_first_rung(study, 0.9)
    assert first and second
    # The third is the best third only if it beats both.
    third, pruned = _run_to_first_rung(study, 0.95)
    assert not pruned
    assert study.trials[third.number].system_attrs["hpo.rung_0"] == 0.95
    # Judged once per rung: a later report within the rung does not judge it again.
    third.report(0.1, 2)
    assert not third.should_prune()
    paused = [t for t in study.get_trials() if is_paused(t)]
    assert [t.user_attrs[ATTR_PAUSED_RUNG] for t in paused] == [0, 0]


def test_promotes_the_best_paused_trial_once_it_ranks() -> None:
    study = _study()
    for value in (0.5, 0.9, 0.2):  # all three paused: the 0.2 one came last
        assert _run_to_first_rung(study, value)[1]
    trials = study.get_trials()
    assert rung_ranking(trials, 0, study.direction) == [1, 0, 2]
    found = find_promotion(trials, study.direction, reduction_factor=3)
    assert found is not None and found.parent.number == 1 and found.rung == 0

    assert promote(study, base_seed=None) == 1
    waiting = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert len(waiting) == 1
    attrs = waiting[0].user_attrs
    assert attrs[ATTR_CONTINUES] == 1
    assert attrs[ATTR_RETRY_ROOT] == 1  # the parent's folder, so its checkpoint
    assert attrs[ATTR_PROMOTED_RUNG] == 0
    assert attrs[ATTR_SEED] == 101
    # Taken up: not promoted twice, and nobody else ranks yet (one of three).
    assert promote(study, base_seed=None) is None


def test_a_continuation_is_judged_only_at_later_rungs() -> None:
    study = _study()
    for value in (0.5, 0.9, 0.2):
        _run_to_first_rung(study, value)
    promote(study, base_seed=None)
    continuation = study.ask()
    assert continuation.user_attrs[ATTR_CONTINUES] == 1
    continuation.report(0.1, 2)  # resumed past rung 0, which it passed
    assert not continuation.should_prune()
    continuation.report(0.1, 3)  # rung 1: alone there, so paused again
    assert continuation.should_prune()
    study.tell(continuation, state=optuna.trial.TrialState.PRUNED)
    frozen = study.trials[continuation.number]
    assert frozen.user_attrs[ATTR_PAUSED_RUNG] == 1
    assert passed_rung(frozen) == 0
    # Its own continuation does not come before more configurations reach rung 1.
    assert find_promotion(study.get_trials(), study.direction, 3) is None


def test_higher_rungs_are_promoted_first() -> None:
    study = _study()
    for value in (0.5, 0.9, 0.2, 0.3, 0.4, 0.1):
        _run_to_first_rung(study, value)
    # Six at rung 0: the best two (0.9 and 0.5) rank; promote both, best first.
    assert promote(study, None) == 1
    assert promote(study, None) == 0


def test_minimize_ranks_low_values_first() -> None:
    pruner = ResumableHalvingPruner(min_resource=1, reduction_factor=2)
    study = optuna.create_study(direction="minimize", pruner=pruner)
    for value in (0.5, 0.1):
        _run_to_first_rung(study, value)
    assert rung_ranking(study.get_trials(), 0, study.direction) == [1, 0]


def _spec(pruner: dict[str, object]) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "s",
            "task": {"name": "mlp-classifier"},
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            "pruner": pruner,
        }
    )


@pytest.mark.parametrize(
    ("pruner", "loc"),
    [
        ({"name": "resumable-sha", "options": {"reduction_factor": 1}}, ("pruner", "options")),
        ({"name": "resumable-sha", "options": {"eta": 3}}, ("pruner", "options", "eta")),
        (
            {"name": "patient", "options": {"patience": 1, "wrapped": {"name": "resumable-sha"}}},
            ("pruner", "options", "wrapped", "name"),
        ),
    ],
)
def test_bad_options_are_located(pruner: dict[str, object], loc: tuple[str, ...]) -> None:
    errors = check_pruner(_spec(pruner))
    assert errors and errors[0].loc == loc


def test_good_options_pass() -> None:
    spec = _spec({"name": "resumable-sha", "options": {"min_resource": 2, "reduction_factor": 2}})
    assert check_pruner(spec) == []


def test_a_rung_is_judged_once_even_when_the_pruners_copy_predates_the_judgment() -> None:
    study = _study()
    for value in (0.5, 0.9):
        _run_to_first_rung(study, value)
    third = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    third.report(0.95, 1)
    stale = study._storage.get_trial(third._trial_id)  # read before the judgment
    assert not third.should_prune()  # goes on, its value recorded at rung 0
    third.report(0.0, 2)
    # A cached copy taken before the judgment, now at step 2: still not judged again.
    stale.intermediate_values[2] = 0.0
    assert not study.pruner.prune(study, stale)
    assert study.trials[third.number].system_attrs["hpo.rung_0"] == 0.95


def test_a_paused_trial_without_its_own_rung_value_is_not_promoted_on_its_folders() -> None:
    # An earlier attempt of folder 0 ranked at rung 0; its retry was paused there on a
    # value that was not finite, so it has no rung value of its own.
    ranked = optuna.trial.create_trial(
        state=optuna.trial.TrialState.FAIL,
        user_attrs={ATTR_RETRY_ROOT: 0},
        system_attrs={"hpo.rung_0": 0.9},
    )
    retry = optuna.trial.create_trial(
        state=optuna.trial.TrialState.PRUNED,
        user_attrs={ATTR_RETRY_ROOT: 0, ATTR_PAUSED_RUNG: 0},
    )
    others = [
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.PRUNED,
            user_attrs={ATTR_RETRY_ROOT: root, ATTR_PAUSED_RUNG: 0},
            system_attrs={"hpo.rung_0": value},
        )
        for root, value in ((5, 0.1), (6, 0.2))
    ]
    for number, trial in enumerate([ranked, retry, *others]):
        trial.number = number
    direction = optuna.study.StudyDirection.MAXIMIZE
    assert find_promotion([ranked, retry, *others], direction, 3) is None
