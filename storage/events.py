"""The audit log and the wake-up signal for idle workers."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from storage.models import Event

NOTIFY_CHANNEL = "hpo_claimable"


def record_event(
    session: Session, kind: str, study_name: str | None, actor: str | None, **detail: Any
) -> None:
    """Append one audit entry (committed with the caller's unit of work)."""
    session.add(Event(kind=kind, study_name=study_name, actor=actor, detail=detail))


def notify_claimable(session: Session) -> None:
    """Wake idle workers when the transaction commits (Postgres LISTEN/NOTIFY).

    On SQLite workers poll, so this is a no-op there.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_notify(:channel, '')"), {"channel": NOTIFY_CHANNEL})
