"""Turning leases whose worker stopped heartbeating into failed, retried trials.

Any process may reap (every worker supervisor and the API do): each lease is
settled in its own transaction under the study's row lock, and the Optuna
side is idempotent, so two reapers never double-count or double-retry.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.budget import lock_lease, lock_study, update_status
from storage.db import Database
from storage.errors import UnavailableError
from storage.events import notify_claimable, record_event
from storage.models import Lease, LeaseState, Study, utcnow
from storage.optuna_store import (
    ATTR_ATTEMPT,
    ATTR_ERROR,
    ATTR_FAIL_REASON,
    ATTR_RETRY_OF,
    ATTR_RETRY_ROOT,
    ATTR_SEED,
)

logger = logging.getLogger(__name__)
FINISHED_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)


@dataclass(frozen=True)
class Reaped:
    study: str
    trial_number: int | None
    action: str  # "retried", "failed", "counted" (already finished in Optuna) or "released"


class Reaper:
    """Reaps stale leases, but only after it has seen the database healthy for a grace period.

    After an outage every worker's heartbeat is old; waiting one grace period
    gives them the chance to heartbeat (and to finish) before being judged.
    """

    def __init__(
        self, db: Database, optuna_storage: RDBStorage, grace_s: float, fail_fast_trials: int
    ) -> None:
        self.db = db
        self.optuna_storage = optuna_storage
        self.grace_s = grace_s
        self.fail_fast_trials = fail_fast_trials
        self._healthy_since = time.monotonic()

    def run_once(self) -> list[Reaped]:
        """Reap what is stale now; never raises for an unavailable database."""
        try:
            stale = self._stale_lease_ids()
        except UnavailableError:
            self._healthy_since = time.monotonic()
            return []
        if time.monotonic() - self._healthy_since < self.grace_s:
            return []
        reaped = []
        for lease_id in stale:
            try:
                with self.db.session_scope() as session:
                    result = self._reap(session, lease_id)
            except UnavailableError:
                self._healthy_since = time.monotonic()
                break
            except Exception:
                logger.exception("could not reap lease %s", lease_id)
                continue
            if result is not None:
                reaped.append(result)
        return reaped

    def _stale_lease_ids(self) -> list[int]:
        cutoff = utcnow() - timedelta(seconds=self.grace_s)
        with self.db.session_scope(read_only=True) as session:
            query = select(Lease.id).where(
                Lease.state == LeaseState.ACTIVE, Lease.heartbeat_at < cutoff
            )
            return list(session.scalars(query.limit(100)).all())

    def _reap(self, session: Session, lease_id: int) -> Reaped | None:
        found = session.get(Lease, lease_id)
        if found is None:
            return None
        study = lock_study(session, found.study_id)
        lease = lock_lease(session, lease_id)
        now = utcnow()
        if study is None or lease is None or not _still_stale(lease, now, self.grace_s):
            return None
        action = self._settle(study, lease, now)
        study.n_active -= 1
        update_status(session, study, now, self.fail_fast_trials)
        record_event(
            session,
            "lease_reaped",
            study.name,
            "system",
            trial=lease.trial_number,
            worker=lease.worker_id,
            action=action,
        )
        notify_claimable(session)
        logger.warning(
            "reaped trial %s of %s from worker %s: %s",
            lease.trial_number,
            study.name,
            lease.worker_id,
            action,
        )
        return Reaped(study.name, lease.trial_number, action)

    def _settle(self, study: Study, lease: Lease, now: datetime) -> str:
        lease.finished_at = now
        if lease.optuna_trial_id is None:
            lease.state = LeaseState.RELEASED
            lease.fail_reason = "lost"
            return "released"
        message = f"worker {lease.worker_id} stopped heartbeating"
        trial = self.optuna_storage.get_trial(lease.optuna_trial_id)
        if trial.state == TrialState.RUNNING:
            fail_trial(self.optuna_storage, lease.optuna_trial_id, "lost", message)
            # Read again: the worker may have told its result in the meantime.
            trial = self.optuna_storage.get_trial(lease.optuna_trial_id)
        if trial.state in FINISHED_STATES and trial.user_attrs.get(ATTR_FAIL_REASON) != "lost":
            # The worker told Optuna but did not settle the lease (it died, or is late).
            lease.state = LeaseState.FINISHED
            lease.outcome = trial.state.name
            study.n_finished += 1
            return "counted"
        lease.fail_reason = "lost"
        lease.error = message
        lease.outcome = "FAIL"
        max_retries = int(study.spec.get("budget", {}).get("max_retries", 0))
        if lease.attempt < max_retries:
            enqueue_retry(self.optuna_storage, study.name, trial, lease.attempt + 1)
            lease.state = LeaseState.LOST
            study.n_lost += 1
            return "retried"
        lease.state = LeaseState.FINISHED
        study.n_finished += 1
        return "failed"


def _still_stale(lease: Lease, now: datetime, grace_s: float) -> bool:
    return lease.state == LeaseState.ACTIVE and lease.heartbeat_at < now - timedelta(
        seconds=grace_s
    )


def fail_trial(storage: RDBStorage, trial_id: int, reason: str, error: str) -> None:
    """Mark a running Optuna trial FAIL with the reason on it (no-op if it already ended)."""
    try:
        storage.set_trial_user_attr(trial_id, ATTR_FAIL_REASON, reason)
        storage.set_trial_user_attr(trial_id, ATTR_ERROR, error)
        storage.set_trial_state_values(trial_id, TrialState.FAIL)
    except optuna.exceptions.UpdateFinishedTrialError:
        pass


def enqueue_retry(
    storage: RDBStorage, study_name: str, trial: optuna.trial.FrozenTrial, attempt: int
) -> None:
    """Enqueue a retry of ``trial`` with the same params and seed, once.

    Idempotent: a retry that already exists (a reaper that died before its
    commit) is not enqueued again.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get(ATTR_RETRY_OF) == trial.number:
            return
    root = trial.user_attrs.get(ATTR_RETRY_ROOT, trial.number)
    user_attrs = {ATTR_RETRY_OF: trial.number, ATTR_RETRY_ROOT: root, ATTR_ATTEMPT: attempt}
    if ATTR_SEED in trial.user_attrs:
        user_attrs[ATTR_SEED] = trial.user_attrs[ATTR_SEED]
    study.enqueue_trial(dict(trial.params), user_attrs=user_attrs)
