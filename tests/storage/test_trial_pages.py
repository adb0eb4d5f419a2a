"""A page of trials read column by column equals what Optuna's storage builds."""

from __future__ import annotations

import math

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_store import open_optuna_storage
from storage.trial_pages import read_trial_page


def _fill(study: optuna.Study) -> None:
    """Trials of every state, with the values Optuna stores specially."""
    for i in range(7):
        trial = study.ask()
        trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        trial.suggest_int("layers", 1, 8)
        trial.suggest_categorical("act", ["relu", None, True, 2.5])
        trial.set_user_attr("hpo.worker", {"host": f"h{i}", "slots": [i, None]})
        study._storage.set_trial_system_attr(trial._trial_id, "hpo.lease", i)
        for step, value in enumerate([0.5, math.nan, math.inf, -math.inf, 0.25 * i]):
            trial.report(value, step)
        if i == 2:
            study.tell(trial, state=TrialState.PRUNED)
        elif i == 3:
            study.tell(trial, state=TrialState.FAIL)
        elif i == 4:
            pass  # left RUNNING, without a value
        else:
            study.tell(trial, [math.inf, -math.inf, 0.1 * i][i % 3])
    study.enqueue_trial({"lr": 1e-3, "layers": 2, "act": "relu"})  # WAITING


def _shown(trials: list[FrozenTrial]) -> list[str]:
    return [repr(t) for t in trials]  # repr: NaN equals NaN


@pytest.mark.parametrize("state", [None, "COMPLETE", "RUNNING", "WAITING", "PRUNED", "FAIL"])
def test_pages_equal_optunas_trials(db_urls: tuple[str, str], state: str | None) -> None:
    storage = open_optuna_storage(db_urls[1])
    try:
        study = optuna.create_study(study_name="paged", storage=storage)
        _fill(study)
        other = optuna.create_study(study_name="other", storage=storage)
        other.enqueue_trial({"x": 1})  # another study's trial is never on the page
        study_id = storage.get_study_id_from_name("paged")
        expected = [
            t for t in storage.get_all_trials(study_id) if state is None or t.state.name == state
        ]
        for limit, offset in [(50, 0), (3, 0), (3, 3), (2, 7), (5, 100)]:
            page, total = read_trial_page(storage, study_id, state, limit, offset)
            assert total == len(expected)
            assert _shown(page) == _shown(expected[offset : offset + limit])
    finally:
        storage.engine.dispose()


def test_a_multi_objective_trial_keeps_its_values_in_order(db_urls: tuple[str, str]) -> None:
    storage = open_optuna_storage(db_urls[1])
    try:
        study = optuna.create_study(
            study_name="two", storage=storage, directions=["minimize", "maximize"]
        )
        trial = study.ask()
        trial.suggest_float("x", 0, 1)
        study.tell(trial, [math.inf, 0.5])
        study_id = storage.get_study_id_from_name("two")
        page, total = read_trial_page(storage, study_id, None, 10, 0)
        assert total == 1 and page[0].values == [math.inf, 0.5]
        assert _shown(page) == _shown(storage.get_all_trials(study_id))
    finally:
        storage.engine.dispose()
