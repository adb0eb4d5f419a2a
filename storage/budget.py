"""Exact budgets: claiming trial slots, finishing them, and reaping lost ones.

The study row is the lock: a claim, a finish and a reap each lock it first
(then the lease), check the counters and change them in one transaction. A
claim succeeds only while ``finished + active < n_trials`` and ``active <
max_concurrent_trials``, so no number of workers can overshoot either.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from optuna.trial import TrialState
from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.events import notify_claimable, record_event
from storage.models import CLAIMABLE, TERMINAL, Lease, LeaseState, Study, StudyStatus, utcnow
from storage.states import FailReason
from storage.stopping import Usage, add_usage, may_start_trials, record_value, why_stopped

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Claim:
    """A trial slot that a worker holds until it finishes or hands it back."""

    lease_id: int
    study_id: int
    study_name: str
    spec: dict[str, Any]
    optuna_study_id: int
    claim_number: int


@dataclass(frozen=True)
class ClaimRequest:
    """What a worker asks for when it claims: which worker, on which device, for which studies."""

    worker_id: str
    device: str
    studies: list[str] | None = None


@dataclass(frozen=True)
class Outcome:
    """How a trial ended, as the budget sees it.

    ``counted`` trials use up the budget (COMPLETE, PRUNED, FAIL of the trial's
    own making); the others hand the slot back (shutdown, cancel).
    """

    state: TrialState  # COMPLETE, PRUNED or FAIL
    counted: bool
    fail_reason: FailReason | None = None
    error: str | None = None


def lock_study(session: Session, study_id: int) -> Study | None:
    return session.get(Study, study_id, with_for_update=True, populate_existing=True)


def lock_lease(session: Session, lease_id: int) -> Lease | None:
    return session.get(Lease, lease_id, with_for_update=True, populate_existing=True)


def study_timed_out(study: Study, now: datetime) -> bool:
    timeout = study.spec.get("budget", {}).get("timeout_s")
    if timeout is None or study.started_at is None:
        return False
    return now >= study.started_at + timedelta(seconds=float(timeout))


def has_room(study: Study) -> bool:
    return (
        study.n_active < study.max_concurrent_trials
        and study.n_finished + study.n_active < study.n_trials
        and why_stopped(study) is None
    )


def claim_slot(
    session: Session,
    worker_id: str,
    device: str,
    studies: list[str] | None = None,
    *,
    held: Study | None = None,
) -> Claim | None:
    """Claim one trial slot of the most deserving running study, or None.

    Studies are served by priority, then the least recently served first.
    ``held`` is a study this transaction has locked already (the one whose
    lease it just settled): it is not locked and read again.
    """
    now = utcnow()
    query = select(Study.id).where(
        Study.status.in_(list(CLAIMABLE)),
        Study.n_active < Study.max_concurrent_trials,
        Study.n_finished + Study.n_active < Study.n_trials,
        may_start_trials(),
    )
    if studies:
        query = query.where(Study.name.in_(studies))
    order = (Study.priority.desc(), Study.last_claimed_at.asc().nulls_first(), Study.id)
    for study_id in session.scalars(query.order_by(*order).limit(20)).all():
        study = held if held is not None and held.id == study_id else lock_study(session, study_id)
        if study is None or StudyStatus(study.status) not in CLAIMABLE or not has_room(study):
            continue
        if study_timed_out(study, now):
            _end_if_idle(session, study, now)
            continue
        return _take_slot(session, study, worker_id, device, now)
    return None


def _take_slot(session: Session, study: Study, worker_id: str, device: str, now: datetime) -> Claim:
    lease = Lease(
        study_id=study.id,
        state=LeaseState.ACTIVE,
        worker_id=worker_id,
        device=device,
        attempt=0,
        claimed_at=now,
        heartbeat_at=now,
    )
    session.add(lease)
    study.n_active += 1
    study.n_claims += 1
    study.last_claimed_at = now
    if study.status == StudyStatus.QUEUED:
        study.status = StudyStatus.RUNNING
        study.started_at = now
    session.flush()
    assert study.optuna_study_id is not None
    return Claim(lease.id, study.id, study.name, study.spec, study.optuna_study_id, study.n_claims)


def attach_trial(
    session: Session,
    lease_id: int,
    worker_id: str,
    *,
    trial_number: int,
    optuna_trial_id: int,
    retry_of: int | None,
    attempt: int,
) -> bool:
    """Record which Optuna trial a lease runs.

    Returns False when the lease is no longer this worker's (it was reaped
    while the worker was stopped): the trial must not run.
    """
    lease = lock_lease(session, lease_id)
    if lease is None or lease.state != LeaseState.ACTIVE or lease.worker_id != worker_id:
        return False
    lease.trial_number = trial_number
    lease.optuna_trial_id = optuna_trial_id
    lease.retry_of = retry_of
    lease.attempt = attempt
    return True


def heartbeat_lease(
    session: Session, lease_id: int, worker_id: str, usage: Usage | None = None
) -> tuple[bool, str | None]:
    """Refresh a lease and what its trial used so far; return (still ours, the study's status).

    The usage is what a reaper charges to the study if the worker dies.
    """
    lease = session.get(Lease, lease_id, populate_existing=True)
    if lease is None or lease.state != LeaseState.ACTIVE or lease.worker_id != worker_id:
        return False, None
    lease.heartbeat_at = utcnow()
    if usage is not None:
        lease.compute_s, lease.train_examples = usage.compute_s, usage.train_examples
    status = session.scalar(select(Study.status).where(Study.id == lease.study_id))
    return True, status


def finish_lease(
    session: Session,
    lease_id: int,
    worker_id: str,
    *,
    study_id: int,
    outcome: Outcome,
    final_state: TrialState,
    fail_fast_trials: int,
    usage: Usage | None = None,
    value: float | None = None,
    notify: bool = True,
) -> bool:
    """Settle a lease whose trial Optuna has been told (``final_state``), with the counters.

    ``usage`` is charged to the study's compute budget; ``value`` (the
    objective of a COMPLETE single-objective trial) feeds ``budget.stop_when``.
    ``notify`` wakes idle workers for the slot set free (a caller that claims
    again in the same transaction decides itself, see :func:`claim_after_finish`).
    Returns False when the lease is no longer this worker's: a reaper took it,
    and counted the told result or failed the trial and enqueued a retry.
    """
    study = lock_study(session, study_id)
    lease = lock_lease(session, lease_id)
    if study is None or lease is None:
        return False
    if lease.state != LeaseState.ACTIVE or lease.worker_id != worker_id:
        return False
    now = utcnow()
    lease.outcome = final_state.name
    lease.fail_reason = outcome.fail_reason
    lease.error = outcome.error
    lease.finished_at = now
    lease.state = LeaseState.FINISHED if outcome.counted else LeaseState.RELEASED
    if usage is not None:
        lease.compute_s, lease.train_examples = usage.compute_s, usage.train_examples
    add_usage(study, usage)
    study.n_active -= 1
    if outcome.counted:
        study.n_finished += 1
        record_value(
            study, value if final_state == TrialState.COMPLETE else None, lease.trial_number
        )
    update_status(session, study, now, fail_fast_trials)
    if notify:
        notify_claimable(session)
    return True


def claim_after_finish(
    session: Session, finished_study_id: int, request: ClaimRequest
) -> Claim | None:
    """Claim the worker's next slot in the transaction that settled its last one.

    One transaction instead of two. Idle workers are woken only when a slot
    stays free: the claim went to another study, found none, or left room.
    """
    finished = session.get(Study, finished_study_id)  # locked by the settlement
    claim = claim_slot(session, request.worker_id, request.device, request.studies, held=finished)
    if (
        claim is None
        or claim.study_id != finished_study_id
        or finished is None
        or has_room(finished)
    ):
        notify_claimable(session)
    return claim


def lease_fail_reason(session: Session, lease_id: int) -> str | None:
    """Why a lease ended without counting (``lost`` when a reaper took its trial)."""
    return session.scalar(select(Lease.fail_reason).where(Lease.id == lease_id))


def release_lease(session: Session, lease_id: int, reason: FailReason) -> None:
    """Hand back a slot that never got an Optuna trial (the ask failed)."""
    found = session.get(Lease, lease_id)
    if found is None:
        return
    study = lock_study(session, found.study_id)
    lease = lock_lease(session, lease_id)
    if study is None or lease is None or lease.state != LeaseState.ACTIVE:
        return
    lease.state = LeaseState.RELEASED
    lease.fail_reason = reason
    lease.finished_at = utcnow()
    study.n_active -= 1
    update_status(session, study, lease.finished_at, None)
    notify_claimable(session)


def fail_study(session: Session, study_id: int, reason: str) -> bool:
    """End an open study as failed with ``reason``.

    Returns False when the study no longer exists or has already ended.
    """
    study = lock_study(session, study_id)
    if study is None or StudyStatus(study.status) in TERMINAL:
        return False
    _set_final(session, study, StudyStatus.FAILED, reason, utcnow())
    notify_claimable(session)
    return True


def update_status(
    session: Session, study: Study, now: datetime, fail_fast_trials: int | None
) -> None:
    """Complete, fail or time out a study once its counters say so."""
    study.updated_at = now
    if StudyStatus(study.status) not in (*CLAIMABLE, StudyStatus.PAUSED):
        return
    # Failing first: a study whose every trial failed the same way did not complete.
    if fail_fast_trials and (reason := _same_first_failures(session, study, fail_fast_trials)):
        _set_final(session, study, StudyStatus.FAILED, reason, now)
    elif study.n_finished >= study.n_trials:
        _set_final(session, study, StudyStatus.COMPLETED, None, now)
    elif (stopped := why_stopped(study)) is not None:
        if study.n_active == 0:
            _set_final(session, study, StudyStatus.COMPLETED, stopped, now)
    elif study_timed_out(study, now):
        _end_if_idle(session, study, now)


def _end_if_idle(session: Session, study: Study, now: datetime) -> None:
    if study.n_active == 0:
        timeout = study.spec.get("budget", {}).get("timeout_s")
        _set_final(
            session, study, StudyStatus.COMPLETED, f"study timeout ({timeout}s) reached", now
        )


def _same_first_failures(session: Session, study: Study, fail_fast_trials: int) -> str | None:
    """The reason to fail a study whose first trials all failed with one error."""
    needed = min(fail_fast_trials, study.n_trials)
    if study.n_finished != needed:
        return None
    rows = session.execute(
        select(Lease.outcome, Lease.error)
        .where(Lease.study_id == study.id, Lease.state == LeaseState.FINISHED)
        .order_by(Lease.finished_at, Lease.id)
        .limit(needed)
    ).all()
    if len(rows) < needed or any(outcome != TrialState.FAIL.name for outcome, _ in rows):
        return None
    # The same kind of error (its type), even if each message names other values.
    kinds = {(error or "").split(":", 1)[0] for _, error in rows}
    if len(kinds) == 1:
        return f"the first {needed} trial(s) all failed the same way, e.g. {rows[0][1]}"
    return None


def _set_final(
    session: Session, study: Study, status: StudyStatus, reason: str | None, now: datetime
) -> None:
    study.status = status
    study.status_reason = reason
    study.finished_at = now
    record_event(
        session, status.value, study.name, "system", reason=reason, finished=study.n_finished
    )
    logger.info("study %s %s%s", study.name, status.value, f": {reason}" if reason else "")


def study_open(session: Session, study_id: int) -> bool:
    """True while the study may still run trials (queued, running or paused)."""
    status = session.scalar(select(Study.status).where(Study.id == study_id))
    return status is not None and StudyStatus(status) not in TERMINAL


def pending_work(session: Session, studies: list[str] | None = None) -> bool:
    """True while some claimable study still has trials to run (now or later)."""
    query = select(Study.id).where(
        Study.status.in_(list(CLAIMABLE)), Study.n_finished < Study.n_trials, may_start_trials()
    )
    if studies:
        query = query.where(Study.name.in_(studies))
    return session.scalar(query.limit(1)) is not None
