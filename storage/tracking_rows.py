"""The study and lease rows that MLflow tracking reads and writes.

Tracking talks to MLflow, which may be slow or down, so every function here is
one short unit of work: no caller holds a study's row lock across a call to
MLflow. Functions take the caller's session and never commit.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.budget import lock_study
from storage.events import record_event
from storage.models import TERMINAL, Event, Lease, LeaseState, Study, StudyStatus, utcnow

SUMMARY_STARTED = "mlflow_summary_started"
SUMMARY_DONE = "mlflow_summarized"
# A summary claimed longer ago than this is taken to have died with its process.
SUMMARY_CLAIM_S = 600.0


@dataclass(frozen=True)
class TrackedStudy:
    """What tracking needs to know about a study (a snapshot, not a live row)."""

    id: int
    name: str
    status: StudyStatus
    status_reason: str | None
    spec: dict[str, Any]
    n_active: int
    experiment_id: str | None
    run_id: str | None
    summarized_at: datetime | None

    @property
    def ended(self) -> bool:
        return self.status in TERMINAL


@dataclass(frozen=True)
class LeaseEnd:
    """How a lease ended, as a trial's MLflow run should show it."""

    id: int
    state: str
    trial_number: int | None
    outcome: str | None
    fail_reason: str | None
    error: str | None
    finished_at: datetime | None
    mlflow_run_id: str | None

    @property
    def active(self) -> bool:
        return self.state == LeaseState.ACTIVE


def _snapshot(row: Study) -> TrackedStudy:
    return TrackedStudy(
        id=row.id,
        name=row.name,
        status=StudyStatus(row.status),
        status_reason=row.status_reason,
        spec=dict(row.spec),
        n_active=row.n_active,
        experiment_id=row.mlflow_experiment_id,
        run_id=row.mlflow_run_id,
        summarized_at=row.mlflow_summarized_at,
    )


def find_study(
    session: Session, *, study_id: int | None = None, name: str | None = None
) -> TrackedStudy | None:
    """The study with ``study_id`` (when given; else the one called ``name``), or None.

    By id, a study deleted and created again under its name is not found: its
    tracking operations must not land in the new study's runs.
    """
    if study_id is not None:
        row = session.get(Study, study_id, populate_existing=True)
        if row is None or (name is not None and row.name != name):
            return None
        return _snapshot(row)
    found = session.scalars(select(Study).where(Study.name == name)).one_or_none()
    return _snapshot(found) if found is not None else None


def record_study_runs(
    session: Session, study_id: int, experiment_id: str, run_id: str
) -> tuple[str, str] | None:
    """Store the study's experiment and parent run unless some are stored already.

    Returns the stored pair (the first writer's, when two raced), or None when
    the study no longer exists.
    """
    row = lock_study(session, study_id)
    if row is None:
        return None
    if row.mlflow_experiment_id is None or row.mlflow_run_id is None:
        row.mlflow_experiment_id = experiment_id
        row.mlflow_run_id = run_id
    return row.mlflow_experiment_id, row.mlflow_run_id


def record_lease_run(session: Session, lease_id: int, run_id: str) -> None:
    """Remember which MLflow run tracks a lease's trial (a no-op if the lease is gone)."""
    session.execute(update(Lease).where(Lease.id == lease_id).values(mlflow_run_id=run_id))


def lease_ends(
    session: Session, study_id: int, lease_ids: Collection[int], run_ids: Collection[str]
) -> list[LeaseEnd]:
    """Leases of the study with one of ``lease_ids`` or tracked by one of ``run_ids``."""
    if not lease_ids and not run_ids:
        return []
    rows = session.scalars(
        select(Lease).where(
            Lease.study_id == study_id,
            Lease.id.in_(list(lease_ids)) | Lease.mlflow_run_id.in_(list(run_ids)),
        )
    ).all()
    return [_lease_end(row) for row in rows]


def lease_end(session: Session, lease_id: int) -> LeaseEnd | None:
    """How the lease ``lease_id`` stands now, or None if it is gone."""
    row = session.get(Lease, lease_id, populate_existing=True)
    return _lease_end(row) if row is not None else None


def _lease_end(row: Lease) -> LeaseEnd:
    return LeaseEnd(
        id=row.id,
        state=row.state,
        trial_number=row.trial_number,
        outcome=row.outcome,
        fail_reason=row.fail_reason,
        error=row.error,
        finished_at=row.finished_at,
        mlflow_run_id=row.mlflow_run_id,
    )


def studies_to_sweep(session: Session, limit: int = 100) -> list[tuple[int, str]]:
    """(id, name) of studies tracked in MLflow and not summarized yet (live ones first)."""
    query = (
        select(Study.id, Study.name)
        .where(Study.mlflow_experiment_id.is_not(None), Study.mlflow_summarized_at.is_(None))
        .order_by(Study.id.desc())
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(query).all()]


def studies_to_summarize(session: Session, limit: int = 50) -> list[tuple[int, str]]:
    """(id, name) of ended studies with no running trial whose summary is not written."""
    query = (
        select(Study.id, Study.name)
        .where(
            Study.status.in_([s.value for s in TERMINAL]),
            Study.n_active == 0,
            Study.mlflow_run_id.is_not(None),
            Study.mlflow_summarized_at.is_(None),
        )
        .order_by(Study.id)
        .limit(limit)
    )
    return [(row[0], row[1]) for row in session.execute(query).all()]


def claim_summary(
    session: Session, study_id: int, owner: str, now: datetime | None = None
) -> TrackedStudy | None:
    """Claim writing the study's MLflow summary; None when there is nothing to claim.

    Nothing to claim: the study is gone, still running trials, already
    summarized, or another process claimed it less than ``SUMMARY_CLAIM_S``
    ago. The claim is an audit entry written under the study's row lock, so two
    processes never both claim; it expires, so a process that died midway is
    replaced. The same ``owner`` may claim again (a retried attempt).
    """
    now = now or utcnow()
    row = lock_study(session, study_id)
    if row is None or row.mlflow_summarized_at is not None or row.n_active > 0:
        return None
    study = _snapshot(row)
    if not study.ended or study.run_id is None:
        return None
    last = _last_summary_event(session, study)
    if last is not None and last.kind == SUMMARY_STARTED:
        live = last.at > now - timedelta(seconds=SUMMARY_CLAIM_S)
        if live and last.detail.get("owner") != owner:
            return None
        if live:
            return study
    record_event(session, SUMMARY_STARTED, study.name, "system", study_id=study.id, owner=owner)
    return study


def mark_summarized(session: Session, study_id: int) -> bool:
    """Record that the summary is written; False if it already was (or the study is gone)."""
    row = lock_study(session, study_id)
    if row is None or row.mlflow_summarized_at is not None:
        return False
    row.mlflow_summarized_at = utcnow()
    record_event(session, SUMMARY_DONE, row.name, "system", study_id=row.id)
    return True


def _last_summary_event(session: Session, study: TrackedStudy) -> Event | None:
    events = session.scalars(
        select(Event)
        .where(Event.study_name == study.name, Event.kind.in_([SUMMARY_STARTED, SUMMARY_DONE]))
        .order_by(Event.id.desc())
        .limit(20)
    ).all()
    # The name may have belonged to a deleted study: only this study's entries count.
    return next((e for e in events if e.detail.get("study_id") == study.id), None)
