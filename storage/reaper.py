"""Turning leases whose worker stopped heartbeating into failed, retried trials.

Any process may reap (every worker supervisor and the API do): each lease is
settled in its own transaction under the study's row lock, and the Optuna
side is idempotent, so two reapers never double-count or double-retry.
Each pass also fails the orphaned Optuna trials of open studies (see
:mod:`storage.orphans`), so Optuna never shows a trial RUNNING that no worker runs.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import optuna
from optuna.storages import RDBStorage
from optuna.trial import TrialState
from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from storage.budget import lock_lease, lock_study, update_status
from storage.db import Database
from storage.errors import UnavailableError
from storage.events import notify_claimable, record_event
from storage.halving import passed_rung
from storage.models import TERMINAL, Lease, LeaseState, Study, utcnow
from storage.optuna_store import (
    ATTR_ATTEMPT,
    ATTR_FAIL_REASON,
    ATTR_PROMOTED_RUNG,
    ATTR_RETRY_OF,
    ATTR_RETRY_ROOT,
    ATTR_SEED,
    folder_root,
)
from storage.orphans import ActiveLease, fail_orphan, fail_trial, find_orphans
from storage.seeds import trial_seed
from storage.states import FailReason
from storage.stopping import Usage, add_usage, record_value

logger = logging.getLogger(__name__)
# Ended studies are still checked for orphans for a while (a worker that died
# during the last ask of a study leaves one after the study completed).
ORPHAN_WATCH_AFTER_END = timedelta(hours=1)
# What a reap did with a lease: "counted" when the trial had already finished in Optuna.
ReapAction = Literal["retried", "failed", "counted", "released"]


@dataclass(frozen=True)
class Reaped:
    study: str
    trial_number: int | None
    action: ReapAction


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
        self._fail_orphans_of_open_studies()
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
        action = self._settle(session, study, lease, now)
        # What the trial used up to its last heartbeat was spent all the same.
        add_usage(study, Usage(lease.compute_s or 0.0, lease.train_examples or 0))
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

    def _settle(self, session: Session, study: Study, lease: Lease, now: datetime) -> ReapAction:
        lease.finished_at = now
        if lease.optuna_trial_id is None:
            # The worker died before its trial was recorded here: nothing ran.
            lease.state = LeaseState.RELEASED
            lease.fail_reason = FailReason.LOST
            session.flush()
            self._fail_orphans(session, study)
            return "released"
        message = f"worker {lease.worker_id} stopped heartbeating"
        try:
            trial = self.optuna_storage.get_trial(lease.optuna_trial_id)
        except KeyError:
            # The Optuna study is gone (deleted behind the service): nothing to count.
            lease.state = LeaseState.RELEASED
            lease.fail_reason = FailReason.MISSING
            return "released"
        failed_here = False
        if trial.state == TrialState.RUNNING:
            failed_here = fail_trial(
                self.optuna_storage, lease.optuna_trial_id, FailReason.LOST, message
            )
            # Read again: the worker may have told its result in the meantime.
            trial = self.optuna_storage.get_trial(lease.optuna_trial_id)
        if not failed_here and not _lost_earlier(trial):
            # The worker told its result (first) but did not settle the lease:
            # it died, or is late. Its result counts, once.
            lease.state = LeaseState.FINISHED
            lease.outcome = trial.state.name
            study.n_finished += 1
            single = trial.state == TrialState.COMPLETE and len(trial.values or []) == 1
            record_value(study, trial.values[0] if single else None, trial.number)
            return "counted"
        lease.fail_reason = FailReason.LOST
        lease.error = message
        lease.outcome = TrialState.FAIL.name
        max_retries = int(study.spec.get("budget", {}).get("max_retries", 0))
        if lease.attempt < max_retries:
            base_seed = study.spec.get("sampler", {}).get("seed")
            enqueue_retry(
                self.optuna_storage, study.name, trial, lease.attempt + 1, base_seed=base_seed
            )
            lease.state = LeaseState.LOST
            study.n_lost += 1
            return "retried"
        lease.state = LeaseState.FINISHED
        study.n_finished += 1
        record_value(study, None, trial.number)
        return "failed"

    def _fail_orphans(self, session: Session, study: Study) -> int:
        """Fail the study's orphaned trials; the caller holds the study's row lock."""
        failed = 0
        for trial in self._orphans(session, study.id, study.optuna_study_id):
            why = "its worker stopped before the trial was recorded on its lease"
            if fail_orphan(self.optuna_storage, study.name, trial, why):
                record_event(session, "trial_orphaned", study.name, "system", trial=trial.number)
                failed += 1
        if failed:
            study.updated_at = utcnow()  # the row's version: readers recount the trials
        return failed

    def _orphans(
        self, session: Session, study_id: int, optuna_study_id: int | None
    ) -> list[optuna.trial.FrozenTrial]:
        if optuna_study_id is None:
            return []
        try:
            running = self.optuna_storage.get_all_trials(
                optuna_study_id, deepcopy=False, states=(TrialState.RUNNING,)
            )
        except KeyError:
            return []  # the Optuna study is gone: nothing runs there
        if not running:
            return []
        rows = session.execute(
            select(Lease.id, Lease.optuna_trial_id, Lease.claimed_at).where(
                Lease.study_id == study_id, Lease.state == LeaseState.ACTIVE
            )
        ).all()
        return find_orphans(running, [ActiveLease(*row) for row in rows])

    def _fail_orphans_of_open_studies(self) -> None:
        """Look for orphans in open (and recently ended) studies; lock only where found."""
        try:
            with self.db.session_scope(read_only=True) as session:
                rows = session.execute(_watched_studies(utcnow())).all()
            for study_id, optuna_study_id in rows:
                with self.db.session_scope() as session:
                    # A first look without the lock; the look under the lock decides.
                    if not self._orphans(session, study_id, optuna_study_id):
                        continue
                    study = lock_study(session, study_id)
                    if study is not None:
                        self._fail_orphans(session, study)
        except UnavailableError:
            self._healthy_since = time.monotonic()


def _watched_studies(now: datetime) -> Select[int, int | None]:
    return select(Study.id, Study.optuna_study_id).where(
        Study.optuna_study_id.is_not(None),
        or_(
            Study.status.not_in(list(TERMINAL)),
            Study.finished_at >= now - ORPHAN_WATCH_AFTER_END,
        ),
    )


def _lost_earlier(trial: optuna.trial.FrozenTrial) -> bool:
    """Failed as lost by a reaper whose own transaction did not commit (it died)."""
    return (
        trial.state == TrialState.FAIL and trial.user_attrs.get(ATTR_FAIL_REASON) == FailReason.LOST
    )


def _still_stale(lease: Lease, now: datetime, grace_s: float) -> bool:
    return lease.state == LeaseState.ACTIVE and lease.heartbeat_at < now - timedelta(
        seconds=grace_s
    )


def enqueue_retry(
    storage: RDBStorage,
    study_name: str,
    trial: optuna.trial.FrozenTrial,
    attempt: int,
    *,
    base_seed: int | None,
) -> None:
    """Enqueue a retry of ``trial`` with the same params and seed, once.

    ``base_seed`` is the study's sampler seed (the trial's own may derive from it).

    Idempotent: a retry that already exists (a reaper that died before its
    commit) is not enqueued again.
    """
    study = optuna.load_study(study_name=study_name, storage=storage)
    for other in study.get_trials(deepcopy=False):
        if other.user_attrs.get(ATTR_RETRY_OF) == trial.number:
            return
    user_attrs = {
        ATTR_RETRY_OF: trial.number,
        ATTR_RETRY_ROOT: folder_root(trial),
        ATTR_ATTEMPT: attempt,
    }
    if (seed := trial_seed(trial, base_seed)) is not None:
        user_attrs[ATTR_SEED] = seed
    if (passed := passed_rung(trial)) is not None:
        # Resumable halving: the rungs the lost trial passed are not judged again.
        user_attrs[ATTR_PROMOTED_RUNG] = passed
    study.enqueue_trial(dict(trial.params), user_attrs=user_attrs)
