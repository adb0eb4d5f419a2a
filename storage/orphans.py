"""Orphaned Optuna trials: RUNNING in Optuna while no live lease runs them.

A worker that dies after Optuna created its trial but before the trial was
recorded on its lease leaves a RUNNING trial that no lease points at. The
reaper releases such a lease (nothing of the trial ran, so nothing is
counted); this module finds the trial it left behind and fails it, whatever
the moment of death was:

- the ask writes the lease id on the trial (``hpo.lease``) right after Optuna
  creates it, so a trial whose lease is no longer active is an orphan;
- a trial without that attribute was created in the instant between Optuna's
  insert and that write. It belongs to a live ask only if some active lease
  without a trial was claimed before the trial started (an ask starts after
  its claim, on the same worker's clock); otherwise it is an orphan.

An orphan that came from the queue (an enqueued or retried configuration) is
enqueued again first, so no configuration is lost.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import optuna
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState

from storage.optuna_store import (
    ATTR_ERROR,
    ATTR_FAIL_REASON,
    ATTR_LEASE,
    ATTR_REQUEUE_OF,
    trial_id_of,
)
from storage.states import FailReason

logger = logging.getLogger(__name__)
# Clocks of two workers may differ a little; an unmarked trial started this
# close to an active claim is given the benefit of the doubt (a later pass
# decides once that claim has recorded its own trial).
CLOCK_MARGIN = timedelta(seconds=1)


@dataclass(frozen=True)
class ActiveLease:
    """What orphan detection needs of an active lease."""

    id: int
    optuna_trial_id: int | None
    claimed_at: datetime


def find_orphans(
    running: Iterable[FrozenTrial], active: Iterable[ActiveLease]
) -> list[FrozenTrial]:
    """The RUNNING trials of one study that no active lease runs or is about to run."""
    leases = list(active)
    attached = {lease.optuna_trial_id for lease in leases if lease.optuna_trial_id is not None}
    lease_ids = {lease.id for lease in leases}
    asking = [lease.claimed_at for lease in leases if lease.optuna_trial_id is None]
    orphans = []
    for trial in running:
        if trial_id_of(trial) in attached:
            continue
        owner = trial.user_attrs.get(ATTR_LEASE)
        if owner is not None:
            if owner not in lease_ids:
                orphans.append(trial)
            continue
        started = _utc(trial.datetime_start)
        if started is None or not any(claimed <= started + CLOCK_MARGIN for claimed in asking):
            orphans.append(trial)
    return orphans


def _utc(value: datetime | None) -> datetime | None:
    """Optuna stores naive local times; leases store aware UTC ones."""
    if value is None:
        return None
    return value.astimezone(UTC)


def fail_trial(storage: RDBStorage, trial_id: int, reason: FailReason, error: str) -> bool:
    """Mark a running Optuna trial FAIL with the reason on it.

    Returns True when this call ended the trial; False when it had already
    ended (its worker's result came first, and stands).
    """
    try:
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
        storage.set_trial_user_attr(trial_id, ATTR_ERROR, error)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        return False
    return True


def fail_orphan(storage: RDBStorage, study_name: str, trial: FrozenTrial, why: str) -> bool:
    """Fail an orphaned trial; re-enqueue its configuration first if it came from the queue.

    Safe to repeat: a configuration already re-enqueued is not enqueued again.
    Returns True when this call ended the trial.
    """
    fixed = trial.system_attrs.get("fixed_params")
    if fixed:
        _requeue(storage, study_name, trial, dict(fixed))
    failed = fail_trial(storage, trial_id_of(trial), FailReason.ORPHANED, why)
    if failed:
        logger.warning("failed orphaned trial %d of %s: %s", trial.number, study_name, why)
    return failed


def _requeue(
    storage: RDBStorage, study_name: str, trial: FrozenTrial, params: dict[str, object]
) -> None:
    study = optuna.load_study(study_name=study_name, storage=storage)
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get(ATTR_REQUEUE_OF) == trial.number:
            return
    attrs = {k: v for k, v in trial.user_attrs.items() if k not in (ATTR_LEASE, ATTR_REQUEUE_OF)}
    attrs[ATTR_REQUEUE_OF] = trial.number
    study.enqueue_trial(params, user_attrs=attrs)
