"""Optuna's storage: opening it, creating studies, and reading trials for the API.

Worker-side facts about a trial (worker, device, retry_of, error, MLflow run)
are kept as Optuna user attributes under ``hpo.*`` so that the Optuna
dashboard shows them too and the API reads everything from one place.
"""

from __future__ import annotations

import math
import warnings
from datetime import UTC, datetime
from typing import Any

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy import text

from storage.db import PING_AFTER_IDLE_S, ensure_sqlite_dir, is_sqlite, ping_when_idle
from storage.pools import PoolLimits
from storage.spec import StudySpec
from storage.trial_pages import read_trial_page

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


def open_optuna_storage(
    url: str,
    *,
    create_tables: bool = False,
    pool: PoolLimits | None = None,
    ping_idle_s: float = PING_AFTER_IDLE_S,
) -> RDBStorage:
    """An Optuna RDB storage; tables are created only when ``create_tables``.

    Fresh workers must not race to create Optuna's schema (``hpo db upgrade`` does).
    ``pool`` bounds its connections (SQLAlchemy's default is up to 15); one idle
    for ``ping_idle_s`` is pinged before use (:func:`storage.db.ping_when_idle`).
    """
    kwargs: dict[str, Any] = {}
    if pool is not None:
        kwargs.update(pool.engine_kwargs(url))
    if is_sqlite(url):
        ensure_sqlite_dir(url)
        kwargs = {"connect_args": {"timeout": 60}}
    storage = RDBStorage(url, engine_kwargs=kwargs, skip_table_creation=not create_tables)
    if not is_sqlite(url):
        ping_when_idle(storage.engine, ping_idle_s)
    return storage


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
        of trials), decoded as Optuna decodes it (``storage.trial_pages``).
        """
        return read_trial_page(self.storage, study_id, state, limit, offset)

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
