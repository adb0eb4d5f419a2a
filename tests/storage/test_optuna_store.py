"""The fast ask and tell on Optuna's storage, on both backends.

They rest on parts of Optuna that are not its public API (the ``trials``
table, the cached storage's backend, ``_tell_with_warning``): these tests
fail loudly when an Optuna upgrade changes them.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from storage.optuna_store import (
    ATTR_LEASE,
    ATTR_SEED,
    ask_trial,
    first_waiting_trial_id,
    open_optuna_storage,
    tell_trial,
)
from storage.settings import Settings


@pytest.fixture
def study(settings: Settings) -> optuna.Study:
    storage = open_optuna_storage(settings.optuna_storage, create_tables=True)
    return optuna.create_study(storage=storage, study_name="fast", direction="minimize")


def test_a_new_trial_is_created_running_with_its_attributes(study: optuna.Study) -> None:
    assert first_waiting_trial_id(study) is None
    trial = ask_trial(study, {ATTR_LEASE: 7, ATTR_SEED: 11})
    assert trial.number == 0
    assert trial.user_attrs == {ATTR_LEASE: 7, ATTR_SEED: 11}
    x = trial.suggest_float("x", -1, 1)
    stored = study.trials[0]
    assert stored.state == TrialState.RUNNING and stored.params == {"x": x}
    assert stored.user_attrs == {ATTR_LEASE: 7, ATTR_SEED: 11}


def test_an_enqueued_trial_is_taken_first_and_keeps_its_seed(study: optuna.Study) -> None:
    study.enqueue_trial({"x": 0.5}, user_attrs={ATTR_SEED: 3})
    waiting = study.get_trials(states=(TrialState.WAITING,))
    assert first_waiting_trial_id(study) == waiting[0]._trial_id
    trial = ask_trial(study, {ATTR_LEASE: 1, ATTR_SEED: 99})
    assert trial.suggest_float("x", -1, 1) == 0.5
    assert study.trials[0].user_attrs == {ATTR_LEASE: 1, ATTR_SEED: 3}
    assert first_waiting_trial_id(study) is None


def test_tell_returns_the_state_and_keeps_a_finished_one(study: optuna.Study) -> None:
    trial = ask_trial(study, {ATTR_LEASE: 1})
    trial.suggest_float("x", -1, 1)
    assert tell_trial(study, trial, [0.25], TrialState.COMPLETE) == TrialState.COMPLETE
    # A second tell (a retried settlement, or a reaper that failed it first) changes nothing.
    assert tell_trial(study, trial, None, TrialState.FAIL) == TrialState.COMPLETE
    assert study.trials[0].value == 0.25


def test_the_in_memory_storage_works_the_same() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.1})
    assert first_waiting_trial_id(study) is not None
    trial = ask_trial(study, {ATTR_LEASE: 2})
    assert trial.suggest_float("x", -1, 1) == 0.1
    assert tell_trial(study, trial, None, TrialState.PRUNED) == TrialState.PRUNED


def test_a_created_trial_is_built_as_optuna_builds_it(study: optuna.Study) -> None:
    from storage.optuna_store import _created_trial

    trial = ask_trial(study, {ATTR_LEASE: 5})
    fresh = optuna.Trial(study, trial._trial_id)
    built = _created_trial(study, trial._trial_id)
    # Optuna's own constructor and the one that skips the read agree on every field.
    assert set(vars(built)) == set(vars(fresh))
    assert built._cached_frozen_trial == fresh._cached_frozen_trial
    built.report(1.0, 1)
    assert study.trials[0].intermediate_values == {1: 1.0}


def test_ids_come_from_one_place(study: optuna.Study) -> None:
    from storage.optuna_store import study_id_of, trial_id_of

    trial = ask_trial(study, {ATTR_LEASE: 1})
    storage = study._storage
    assert study_id_of(study) == storage.get_study_id_from_name("fast")
    assert trial_id_of(trial) == trial_id_of(study.trials[0])
    assert storage.get_trial_number_from_id(trial_id_of(trial)) == trial.number
