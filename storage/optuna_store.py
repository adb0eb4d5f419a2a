"""Optuna's storage: opening it, creating studies, and reading trials for the API.

Worker-side facts about a trial (worker, device, retry_of, error, MLflow run)
are kept as Optuna user attributes under ``hpo.*`` so that the Optuna
dashboard shows them too and the API reads everything from one place.
"""

from __future__ import annotations

import copy
import math
import warnings
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models as rdb_models
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text
from sqlalchemy.orm import selectinload

from storage.db import ensure_sqlite_dir, is_sqlite
from storage.pools import PoolLimits
from storage.spec import StudySpec

ATTR_RETRY_OF = "hpo.retry_of"
ATTR_RETRY_ROOT = "hpo.retry_root"
ATTR_ATTEMPT = "hpo.attempt"
ATTR_ERROR = "hpo.error"
ATTR_FAIL_REASON = "hpo.fail_reason"
ATTR_SEED = "hpo.seed"
ATTR_ENQUEUED_BY = "hpo.enqueued_by"
# The lease that asked for the trial: written right after the ask, so that a
# trial whose worker died before recording it on the lease can be told apart.
ATTR_LEASE = "hpo.lease"
# On a re-queued copy of an orphaned enqueued trial: the orphan's number.
ATTR_REQUEUE_OF = "hpo.requeue_of"
# Resumable successive halving (storage.halving): the rung a trial was paused
# at, the paused trial a continuation goes on from, and the rung it passed.
ATTR_PAUSED_RUNG = "hpo.paused_rung"
ATTR_CONTINUES = "hpo.continues"
ATTR_PROMOTED_RUNG = "hpo.promoted_rung"
# Resumable successive halving: the system attribute ``hpo.rung_<n>`` holds a
# trial's value at rung n (a pruner reads it back).
RUNG_ATTR_PREFIX = "hpo.rung_"
# A trial enqueued from another study's best (storage.warm_start): where it came from.
ATTR_WARM_START = "hpo.warm_start"
# What a trial used of its device's memory, for packing trials onto devices (workers.packing).
ATTR_DEVICE_MEMORY = "hpo.device_memory"
TRIAL_STATES = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")
_TRIAL_RELATIONS = (
    "params",
    "values",
    "user_attributes",
    "system_attributes",
    "intermediate_values",
)


def open_optuna_storage(
    url: str, *, create_tables: bool = False, pool: PoolLimits | None = None
) -> RDBStorage:
    """An Optuna RDB storage; tables are created only when ``create_tables``.

    Fresh workers must not race to create Optuna's schema (``hpo db upgrade`` does).
    ``pool`` bounds its connections (SQLAlchemy's default is up to 15).
    """
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if pool is not None:
        kwargs.update(pool.engine_kwargs(url))
    if is_sqlite(url):
        ensure_sqlite_dir(url)
        kwargs = {"connect_args": {"timeout": 60}}
    return RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create_tables)


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


def folder_root(trial: optuna.Trial | FrozenTrial) -> int:
    """The trial whose folder ``trial`` works in: retries and continuations share their
    first trial's (``hpo.retry_root``), so they resume from its checkpoint."""
    return int(trial.user_attrs.get(ATTR_RETRY_ROOT, trial.number))


def study_id_of(study: optuna.Study) -> int:
    """The id of ``study`` in Optuna's storage (Optuna keeps it private)."""
    return int(study._study_id)


def trial_id_of(trial: optuna.Trial | FrozenTrial) -> int:
    """The id of ``trial`` in Optuna's storage (Optuna keeps it private)."""
    return int(trial._trial_id)


def set_trial_attr(
    study: optuna.Study, trial: FrozenTrial, key: str, value: Any, *, system: bool = False
) -> None:
    """Write an attribute of a running trial from a pruner (which sees a FrozenTrial).

    A pruner sees the trial's user attributes as they were at the ask, but its
    system attributes as stored: what a pruner reads back again must be a
    system attribute.
    """
    if system:
        study._storage.set_trial_system_attr(trial._trial_id, key, value)
    else:
        study._storage.set_trial_user_attr(trial._trial_id, key, value)


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

    Reads the trial once (``study.tell`` reads it again to return it). A
    trial that had already ended (a reaper failed it) keeps its state, which
    is returned.
    """
    from optuna.study._tell import _tell_with_warning

    final, _, _ = _tell_with_warning(
        study, trial, values, state, skip_if_finished=True, suppress_warning=True
    )
    return final


def enable_sqlite_wal(storage: RDBStorage) -> None:
    """WAL lets the API read while a worker writes; the mode persists in the file."""
    if storage.engine.dialect.name == "sqlite":
        with storage.engine.connect() as conn:
            conn.exec_driver_sql("PRAGMA journal_mode=WAL")


def create_optuna_study(storage: RDBStorage, spec: StudySpec) -> int:
    """Create the Optuna study of ``spec`` and return its id.

    Raises:
        optuna.exceptions.DuplicatedStudyError: the name exists in Optuna's storage.
    """
    study = optuna.create_study(storage=storage, study_name=spec.name, directions=spec.directions)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names([o.metric for o in spec.objective_list])
    return study._study_id


def delete_optuna_study(storage: RDBStorage, name: str) -> None:
    """Delete the Optuna study if it exists."""
    try:
        study_id = storage.get_study_id_from_name(name)
    except KeyError:
        return
    storage.delete_study(study_id)


class OptunaReader:
    """Read-only views of an Optuna study for the API."""

    def __init__(self, storage: RDBStorage) -> None:
        self.storage = storage

    def count_states(self, study_id: int) -> dict[str, int]:
        """Trials per state, with every state present (one SQL statement)."""
        counts = dict.fromkeys(TRIAL_STATES, 0)
        query = text("SELECT state, count(*) FROM trials WHERE study_id = :sid GROUP BY state")
        with self.storage.engine.connect() as conn:
            for state, count in conn.execute(query, {"sid": study_id}):
                name = state if isinstance(state, str) else TrialState(state).name
                counts[name] = int(count)
        return counts

    def page(
        self, study_id: int, state: str | None, limit: int, offset: int
    ) -> tuple[list[FrozenTrial], int]:
        """One page of trials in order of number, and how many there are.

        Loads only the page (a study's full history costs seconds at thousands
        of trials); it goes through Optuna's own ORM models and builder so that
        values and distributions are decoded exactly as Optuna does.
        """
        with self.storage.scoped_session() as session:
            query = session.query(rdb_models.TrialModel).filter(
                rdb_models.TrialModel.study_id == study_id
            )
            if state:
                query = query.filter(rdb_models.TrialModel.state == TrialState[state])
            total = query.count()
            rows = (
                query.options(
                    *(
                        selectinload(getattr(rdb_models.TrialModel, name))
                        for name in _TRIAL_RELATIONS
                    )
                )
                .order_by(rdb_models.TrialModel.number)
                .limit(limit)
                .offset(offset)
                .all()
            )
            page = [self.storage._build_frozen_trial_from_trial_model(row) for row in rows]
        return page, total

    def trial(self, study_id: int, number: int) -> FrozenTrial | None:
        try:
            trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, number)
        except KeyError:
            return None
        return self.storage.get_trial(trial_id)

    def best(self, study_id: int, n_objectives: int) -> list[FrozenTrial]:
        """The best trial (single objective) or the Pareto front; empty when none finished."""
        if n_objectives == 1:
            try:
                return [self.storage.get_best_trial(study_id)]
            except ValueError:
                return []
        study = self._study(study_id)
        return list(study.best_trials)

    def importances(self, study_id: int, target_index: int | None) -> dict[str, float]:
        """Parameter importances.

        Raises:
            ValueError: fewer than two completed trials, or none that Optuna can evaluate.
            RuntimeError: the evaluator found no variance to attribute (Optuna's fANOVA).
            KeyError: the Optuna study no longer exists.
        """
        if self.count_states(study_id)[TrialState.COMPLETE.name] < 2:
            raise ValueError("fewer than two completed trials")
        study = self._study(study_id)
        target = None if target_index is None else (lambda t: t.values[target_index])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(study, target=target)
        return {name: float(value) for name, value in importances.items()}

    def _study(self, study_id: int) -> optuna.Study:
        name = self.storage.get_study_name_from_id(study_id)
        return optuna.load_study(study_name=name, storage=self.storage)


def as_utc(value: datetime | None) -> datetime | None:
    """An Optuna time as an aware one: Optuna stores naive times, read here as UTC."""
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def finite_or_none(value: float | None) -> float | None:
    """``value``, or None where JSON has no number for it (NaN, infinities)."""
    return value if value is None or math.isfinite(value) else None
