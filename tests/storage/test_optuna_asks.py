"""The fast ask and tell on Optuna's storage, on both backends.

They rest on parts of Optuna that are not its public API (the ``trials``
table, the cached storage's backend, ``_tell_with_warning``): these tests
fail loudly when an Optuna upgrade changes them.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import event

from storage.optuna_asks import (
    ask_trial,
    asking,
    first_waiting_trial_id,
    load_worker_study,
    suggest,
    tell_trial,
)
from storage.optuna_store import ATTR_LEASE, ATTR_SEED, open_optuna_storage
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


def test_a_pruned_trial_takes_its_last_report_as_study_tell_does(study: optuna.Study) -> None:
    trial = ask_trial(study, {ATTR_LEASE: 1})
    trial.report(0.75, 1)
    trial.report(0.5, 2)
    assert tell_trial(study, trial, None, TrialState.PRUNED) == TrialState.PRUNED
    assert study.trials[0].value == 0.5 and study.trials[0].state == TrialState.PRUNED
    unreported = ask_trial(study, {ATTR_LEASE: 2})
    assert tell_trial(study, unreported, None, TrialState.PRUNED) == TrialState.PRUNED
    assert study.trials[1].value is None


def test_a_complete_trial_needs_usable_values(study: optuna.Study) -> None:
    trial = ask_trial(study, {ATTR_LEASE: 1})
    with pytest.raises(ValueError):
        tell_trial(study, trial, [float("nan")], TrialState.COMPLETE)
    with pytest.raises(ValueError):
        tell_trial(study, trial, [1.0, 2.0], TrialState.COMPLETE)  # one objective
    assert study.trials[0].state == TrialState.RUNNING


def test_the_in_memory_storage_works_the_same() -> None:
    study = optuna.create_study()
    study.enqueue_trial({"x": 0.1})
    assert first_waiting_trial_id(study) is not None
    trial = ask_trial(study, {ATTR_LEASE: 2})
    assert trial.suggest_float("x", -1, 1) == 0.1
    assert tell_trial(study, trial, None, TrialState.PRUNED) == TrialState.PRUNED


def test_a_created_trial_is_built_as_optuna_builds_it(study: optuna.Study) -> None:
    from storage.optuna_asks import _created_trial

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


def _history(study: optuna.Study, n: int) -> None:
    """``n`` finished trials and one running, as other workers would leave them."""
    space = {"x": optuna.distributions.FloatDistribution(-1, 1)}
    for i in range(n):
        x = (i * 0.37) % 2 - 1
        study.add_trial(
            optuna.trial.create_trial(params={"x": x}, distributions=space, value=x * x)
        )
    study.add_trial(
        optuna.trial.create_trial(state=TrialState.RUNNING, params={"x": 0.3}, distributions=space)
    )


def _worker_ask(study: optuna.Study) -> float:
    with asking(study):
        trial = ask_trial(study, {ATTR_LEASE: 1})
        return float(suggest(trial, "x", optuna.distributions.FloatDistribution(-1, 1)))


def test_a_worker_ask_reads_the_trials_once_and_samples_as_optuna_does(
    settings: Settings,
) -> None:
    storage = open_optuna_storage(settings.optuna_storage, create_tables=True)
    for name in ("plain", "worker"):
        _history(optuna.create_study(storage=storage, study_name=name), 20)
    plain = optuna.load_study(
        study_name="plain", storage=storage, sampler=optuna.samplers.TPESampler(seed=5)
    )
    worker = load_worker_study(
        "worker", storage, optuna.samplers.TPESampler(seed=5), optuna.pruners.NopPruner()
    )
    reads: list[int] = []
    real = storage._get_trials

    def counted(*args: object, **kwargs: object) -> object:
        reads.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    storage._get_trials = counted  # type: ignore[method-assign]
    expected = plain.ask().suggest_float("x", -1, 1)
    plain_reads, reads[:] = len(reads), []
    # Same history, same seed: the same proposal (TPE with the constant liar
    # sees the running trial in both), from one read of the trials where
    # study.ask() reads three times (the queue, the search space, the running trials).
    assert _worker_ask(worker) == expected
    assert plain_reads >= 2 and len(reads) == 1
    # What the sampler shares with other workers is stored as plain Optuna stores it.
    stored = [
        optuna.load_study(study_name=n, storage=storage).trials[-1] for n in ("plain", "worker")
    ]
    assert stored[0].params == stored[1].params == {"x": expected}
    assert stored[0].system_attrs == stored[1].system_attrs != {}


def _transactions(storage: RDBStorage) -> list[int]:
    commits: list[int] = []
    event.listen(storage.engine, "commit", lambda _conn: commits.append(1))
    return commits


def test_the_parameters_of_an_ask_are_written_in_one_transaction(settings: Settings) -> None:
    storage = open_optuna_storage(settings.optuna_storage, create_tables=True)
    optuna.create_study(storage=storage, study_name="many")
    worker = load_worker_study(
        "many", storage, optuna.samplers.RandomSampler(seed=2), optuna.pruners.NopPruner()
    )
    space = {
        "lr": optuna.distributions.FloatDistribution(1e-5, 1e-2, log=True),
        "layers": optuna.distributions.IntDistribution(1, 6),
        "optimizer": optuna.distributions.CategoricalDistribution(["adamw", "sgd"]),
        "dropout": optuna.distributions.FloatDistribution(0.0, 0.3),
    }
    trial = ask_trial(worker, {ATTR_LEASE: 1})
    commits = _transactions(storage)
    with asking(worker):
        values = {name: suggest(trial, name, d) for name, d in space.items()}
        assert commits == []  # nothing written yet
    assert len(commits) == 1
    assert optuna.load_study(study_name="many", storage=storage).trials[0].params == values
    # A block that fails leaves the trial without parameters (the worker hands it back).
    second = ask_trial(worker, {ATTR_LEASE: 2})
    with pytest.raises(RuntimeError), asking(worker):
        suggest(second, "lr", space["lr"])
        raise RuntimeError("the worker was interrupted")
    assert optuna.load_study(study_name="many", storage=storage).trials[1].params == {}
    # Outside a block every write goes through at once, as in plain Optuna.
    third = ask_trial(worker, {ATTR_LEASE: 3})
    suggest(third, "lr", space["lr"])
    assert "lr" in optuna.load_study(study_name="many", storage=storage).trials[2].params


def test_the_next_ask_sees_trials_added_since(settings: Settings) -> None:
    storage = open_optuna_storage(settings.optuna_storage, create_tables=True)
    _history(optuna.create_study(storage=storage, study_name="moving"), 12)
    worker = load_worker_study(
        "moving", storage, optuna.samplers.TPESampler(seed=1), optuna.pruners.NopPruner()
    )
    _worker_ask(worker)
    # Another process finishes a trial: the next ask reads it.
    other = optuna.load_study(study_name="moving", storage=storage)
    other.add_trial(
        optuna.trial.create_trial(
            params={"x": 0.0},
            distributions={"x": optuna.distributions.FloatDistribution(-1, 1)},
            value=0.0,
        )
    )
    _worker_ask(worker)
    values = [t.value for t in worker.get_trials(states=(TrialState.COMPLETE,))]
    assert len(values) == 13 and 0.0 in values
