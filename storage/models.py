"""The service's own tables (never Optuna's or MLflow's).

A study row holds the budget counters; a lease row is one claimed trial slot.
Counters change only in transactions that hold the study row's lock, together
with the lease rows they count.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


class StudyStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    CANCELLED = "cancelled"
    FAILED = "failed"


CLAIMABLE = (StudyStatus.QUEUED, StudyStatus.RUNNING)
TERMINAL = (StudyStatus.COMPLETED, StudyStatus.CANCELLED, StudyStatus.FAILED)


class LeaseState(enum.StrEnum):
    ACTIVE = "active"  # a worker holds the slot and heartbeats it
    FINISHED = "finished"  # counted against n_trials
    LOST = "lost"  # the worker vanished; a retry was enqueued
    RELEASED = "released"  # handed back (shutdown, cancel); not counted


class Base(DeclarativeBase):
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON}


class Study(Base):
    __tablename__ = "hpo_studies"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    status_reason: Mapped[str | None] = mapped_column(Text)
    spec: Mapped[dict[str, Any]]
    priority: Mapped[int] = mapped_column(Integer, default=0)
    n_trials: Mapped[int] = mapped_column(Integer)
    max_concurrent_trials: Mapped[int] = mapped_column(Integer)
    n_active: Mapped[int] = mapped_column(Integer, default=0)
    n_finished: Mapped[int] = mapped_column(Integer, default=0)
    n_lost: Mapped[int] = mapped_column(Integer, default=0)
    n_claims: Mapped[int] = mapped_column(Integer, default=0)
    # Compute budgets: device-seconds of training and training examples, summed
    # over every trial that ran (counted or not: the device time was spent).
    compute_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    train_examples: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    max_compute_s: Mapped[float | None] = mapped_column(Float)
    max_train_examples: Mapped[int | None] = mapped_column(BigInteger)
    # Study-level stopping: the best value so far, n_finished when it last
    # improved, and why no new trial starts (the study completes once idle).
    best_value: Mapped[float | None] = mapped_column(Float)
    best_at_finished: Mapped[int | None] = mapped_column(Integer)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    optuna_study_id: Mapped[int | None] = mapped_column(Integer)
    mlflow_experiment_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    mlflow_summarized_at: Mapped[datetime | None]
    created_by: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    last_claimed_at: Mapped[datetime | None]

    leases: Mapped[list[Lease]] = relationship(
        back_populates="study", cascade="all, delete-orphan", passive_deletes=True
    )


class Lease(Base):
    __tablename__ = "hpo_leases"
    __table_args__ = (
        Index("ix_hpo_leases_study_state", "study_id", "state"),
        Index("ix_hpo_leases_state_heartbeat", "state", "heartbeat_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    study_id: Mapped[int] = mapped_column(ForeignKey("hpo_studies.id", ondelete="CASCADE"))
    state: Mapped[str] = mapped_column(String(16))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    optuna_trial_id: Mapped[int | None] = mapped_column(Integer)
    worker_id: Mapped[str | None] = mapped_column(String(64))
    device: Mapped[str | None] = mapped_column(String(32))
    outcome: Mapped[str | None] = mapped_column(String(16))
    fail_reason: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    mlflow_run_id: Mapped[str | None] = mapped_column(String(64))
    retry_of: Mapped[int | None] = mapped_column(Integer)
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    # What the trial has used so far (heartbeats) and in the end (settlement).
    compute_s: Mapped[float | None] = mapped_column(Float)
    train_examples: Mapped[int | None] = mapped_column(BigInteger)
    claimed_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    study: Mapped[Study] = relationship(back_populates="leases")


class Worker(Base):
    __tablename__ = "hpo_workers"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    host: Mapped[str] = mapped_column(String(255))
    pid: Mapped[int] = mapped_column(Integer)
    device: Mapped[str] = mapped_column(String(32))
    slot: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(16))
    lease_id: Mapped[int | None] = mapped_column(Integer)
    study_name: Mapped[str | None] = mapped_column(String(64))
    trial_number: Mapped[int | None] = mapped_column(Integer)
    trials_run: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    stopped_at: Mapped[datetime | None]


class ApiToken(Base):
    __tablename__ = "hpo_api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    scope: Mapped[str] = mapped_column(String(16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]


class DashboardSession(Base):
    """A browser signed in to the dashboard.

    Only hashes are stored: of the session id (the cookie's value) and of the
    token that signed in, which is looked up again on every request so that
    revoking the token ends the session at once.
    """

    __tablename__ = "hpo_dashboard_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    token_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class Event(Base):
    """The audit log: who did what to which study, and what the system did."""

    __tablename__ = "hpo_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    study_name: Mapped[str | None] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
