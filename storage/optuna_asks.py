"""A worker's asks and tells on Optuna's storage, with fewer round trips than
``study.ask()`` and ``study.tell()`` take.

Like ``storage.optuna_store``, this module may use Optuna's private APIs; no
other may. ``tests/storage/test_optuna_asks.py`` checks that what it builds is
what Optuna builds.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.exceptions import UpdateFinishedTrialError
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models as rdb_models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study._tell import _check_values_are_feasible
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.optuna_store import ATTR_SEED


class _AskSnapshotStorage(_CachedStorage):
    """Optuna's cached storage with fewer round trips inside :func:`asking`.

    A TPE ask reads the study's new and unfinished trials twice a few
    milliseconds apart (the search space, then the running trials for the
    constant liar), seven queries each; the second read would see the same
    trials but for a race that a later read could lose just as well. Each
    suggested parameter, and the sampler's note of its joint proposal, is a
    transaction of its own. Inside the block the trials are read once and
    those writes go to the database together, in one transaction, as the
    block ends.
    """

    def __init__(self, backend: RDBStorage) -> None:
        super().__init__(backend)
        self._asking = threading.local()

    def _read_trials_from_remote_storage(self, study_id: int) -> None:
        read: set[int] | None = getattr(self._asking, "read", None)
        if read is not None and study_id in read:
            return
        super()._read_trials_from_remote_storage(study_id)
        if read is not None:
            read.add(study_id)

    def _pending(self) -> list[Callable[[Session], None]] | None:
        pending: list[Callable[[Session], None]] | None = getattr(self._asking, "writes", None)
        return pending

    def set_trial_param(
        self, trial_id: int, param_name: str, param_value_internal: float, distribution: Any
    ) -> None:
        pending = self._pending()
        if pending is None:
            super().set_trial_param(trial_id, param_name, param_value_internal, distribution)
            return
        with self._lock:
            study_id, _ = self._trial_id_to_study_id_and_number[trial_id]
            known = self._studies[study_id].param_distribution.get(param_name)

        def write(session: Session) -> None:
            self._backend._set_trial_param_without_commit(
                session, trial_id, param_name, param_value_internal, distribution, known
            )
            if known is None:
                with self._lock:
                    self._studies[study_id].param_distribution[param_name] = distribution

        pending.append(write)

    def set_trial_system_attr(self, trial_id: int, key: str, value: Any) -> None:
        pending = self._pending()
        if pending is None:
            super().set_trial_system_attr(trial_id, key, value)
            return
        model = rdb_models.TrialSystemAttributeModel
        pending.append(
            lambda session: self._backend._set_trial_attr_without_commit(
                session, model, trial_id, key, value
            )
        )

    def begin_ask(self) -> None:
        self._asking.read = set()
        self._asking.writes = []

    def end_ask(self, write: bool) -> None:
        writes = self._pending() or []
        self._asking.read = None
        self._asking.writes = None
        if write and writes:
            with _create_scoped_session(self._backend.scoped_session) as session:
                for pending_write in writes:
                    pending_write(session)


def load_worker_study(
    name: str, storage: RDBStorage, sampler: BaseSampler, pruner: BasePruner
) -> optuna.Study:
    """``optuna.load_study`` for a worker: its asks take fewer round trips (see above)."""
    return optuna.load_study(
        study_name=name, storage=_AskSnapshotStorage(storage), sampler=sampler, pruner=pruner
    )


@contextmanager
def asking(study: optuna.Study) -> Iterator[None]:
    """Ask and suggest in this block: the study's trials are read at most once,
    and the parameters are written in one transaction when the block ends
    (not at all when it raises: the trial is then left without them)."""
    storage = study._storage
    if not isinstance(storage, _AskSnapshotStorage):
        yield
        return
    storage.begin_ask()
    try:
        yield
    except BaseException:
        storage.end_ask(write=False)
        raise
    storage.end_ask(write=True)


def suggest(trial: optuna.Trial, name: str, distribution: BaseDistribution) -> Any:
    """``trial.suggest_*`` for a distribution, as ``study.ask(fixed_distributions)`` does."""
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            name, distribution.low, distribution.high, log=distribution.log, step=distribution.step
        )
    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    raise TypeError(f"no suggest method for {type(distribution).__name__}")


def ask_trial(study: optuna.Study, user_attrs: dict[str, Any]) -> optuna.Trial:
    """``study.ask()`` with ``user_attrs`` recorded (a seed the trial has is kept).

    A new trial is created RUNNING with its attributes in one transaction (a
    plain ask and then one write per attribute take three or more), and the
    queue is looked at with one indexed query first. An enqueued trial is
    taken as ``study.ask()`` takes it, and the attributes are then written
    one by one (``hpo.lease`` first, as given).
    """
    if first_waiting_trial_id(study) is not None:
        trial = study.ask()
        for key, value in user_attrs.items():
            if not (key == ATTR_SEED and ATTR_SEED in trial.user_attrs):
                trial.set_user_attr(key, value)
        return trial
    template = optuna.trial.create_trial(state=TrialState.RUNNING, user_attrs=user_attrs)
    trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
    # As study.ask() does: the next read of the study sees this trial.
    study._thread_local.cached_all_trials = None
    return _created_trial(study, trial_id)


def _created_trial(study: optuna.Study, trial_id: int) -> optuna.Trial:
    """``optuna.Trial(study, trial_id)`` for a trial this process just created.

    The trial is taken from the cache the creation filled instead of being
    read back from the database (seven queries). Mirrors ``Trial.__init__``;
    ``tests/storage/test_optuna_store.py`` checks that both build the same.
    """
    frozen = _cached_trial(study, trial_id)
    if frozen is None:
        return optuna.Trial(study, trial_id)
    trial = optuna.Trial.__new__(optuna.Trial)
    trial.study = study
    trial._trial_id = trial_id
    trial.storage = study._storage
    trial._cached_frozen_trial = frozen
    filtered = optuna.pruners._filter_study(study, frozen)
    study.sampler.before_trial(filtered, frozen)
    trial.relative_search_space = None
    trial._relative_params = None
    trial._fixed_params = frozen.system_attrs.get("fixed_params", {})
    return trial


def _cached_trial(study: optuna.Study, trial_id: int) -> FrozenTrial | None:
    """A copy of the trial as the cached storage holds it, None where there is no cache."""
    storage = study._storage
    if not isinstance(storage, _CachedStorage):
        return None
    with storage._lock:
        found = storage._trial_id_to_study_id_and_number.get(trial_id)
        if found is None:
            return None
        study_id, number = found
        return copy.deepcopy(storage._studies[study_id].trials[number])


def first_waiting_trial_id(study: optuna.Study) -> int | None:
    """The id of the study's first WAITING (enqueued) trial, None when the queue is empty.

    One indexed query on Optuna's ``trials`` table; on other storages, a listing.
    """
    storage = study._storage
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, RDBStorage):
        with backend.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT trial_id FROM trials WHERE study_id = :study AND state = 'WAITING' "
                    "ORDER BY trial_id LIMIT 1"
                ),
                {"study": study._study_id},
            ).scalar()
        return None if found is None else int(found)
    waiting = storage.get_all_trials(study._study_id, deepcopy=False, states=(TrialState.WAITING,))
    return waiting[0]._trial_id if waiting else None


def tell_trial(
    study: optuna.Study, trial: optuna.Trial, values: list[float] | None, state: TrialState
) -> TrialState:
    """``study.tell(trial, values, state=state, skip_if_finished=True)``; return the final state.

    Without reading the trial first (``study.tell`` reads it before and
    after): this process built it, and ``trial`` holds its parameters and
    reports. The storage refuses, under the trial's row lock, to change a
    trial that has already ended (a reaper failed it); that trial keeps its
    state, which is read and returned.
    """
    study._thread_local.cached_all_trials = None  # valid within one trial only
    frozen = trial._cached_frozen_trial
    if state == TrialState.COMPLETE:
        problem = _check_values_are_feasible(study, values or [])
        if values is None or problem is not None:
            raise ValueError(problem or "a COMPLETE trial needs its values")
    elif state == TrialState.PRUNED:
        values = _last_report(study, frozen)
    else:
        values = None
    storage = study._storage
    try:
        try:
            filtered = optuna.pruners._filter_study(study, frozen)
            study.sampler.after_trial(filtered, frozen, state, values)
        finally:
            storage.set_trial_state_values(frozen._trial_id, state, values)
    except UpdateFinishedTrialError:
        return storage.get_trial(frozen._trial_id).state
    return state


def _last_report(study: optuna.Study, trial: FrozenTrial) -> list[float] | None:
    """A pruned trial's value: its last report, where that is a usable number."""
    step = trial.last_step
    if step is None:
        return None
    value = trial.intermediate_values[step]
    return [value] if _check_values_are_feasible(study, [value]) is None else None
