"""Worker slots: registration, heartbeats and the live list."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from storage.models import Worker, utcnow


def register_worker(
    session: Session, worker_id: str, *, host: str, pid: int, device: str, slot: int
) -> None:
    """Insert or refresh a worker slot's row: idle, no trials run, heartbeating from now."""
    now = utcnow()
    session.merge(
        Worker(
            id=worker_id,
            host=host,
            pid=pid,
            device=device,
            slot=slot,
            status="idle",
            trials_run=0,
            started_at=now,
            heartbeat_at=now,
        )
    )


def heartbeat_worker(
    session: Session,
    worker_id: str,
    *,
    status: str,
    lease_id: int | None,
    study_name: str | None,
    trial_number: int | None,
) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(
            heartbeat_at=utcnow(),
            status=status,
            lease_id=lease_id,
            study_name=study_name,
            trial_number=trial_number,
        )
    )


def stop_worker(session: Session, worker_id: str) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(
            status="stopped",
            stopped_at=utcnow(),
            lease_id=None,
            study_name=None,
            trial_number=None,
        )
    )


def live_workers(session: Session, grace_s: float) -> list[Worker]:
    """Workers that heartbeat within ``grace_s`` and have not stopped."""
    since = utcnow() - timedelta(seconds=grace_s)
    query = (
        select(Worker)
        .where(Worker.heartbeat_at >= since, Worker.stopped_at.is_(None))
        .order_by(Worker.host, Worker.device, Worker.slot)
    )
    return list(session.scalars(query).all())
