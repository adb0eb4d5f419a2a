"""Dashboard sign-in sessions: rows keyed by the hash of a random session id.

The cookie holds the id; the database holds only its SHA-256 hash and the
hash of the token that signed in, so a copy of the table lets no one in.
Sessions live in the service database, so they survive a restart of the
dashboard and every replica accepts the sessions of the others.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from storage.models import DashboardSession


def hash_session_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def start_session(session: Session, token_hash: str, now: datetime, ttl: timedelta) -> str:
    """Store a session for a verified token (by its hash); return the id for the cookie.

    Sessions that expired before ``now`` are deleted on the way: the table
    holds live sessions only, without a sweeper of its own.
    """
    session.execute(delete(DashboardSession).where(DashboardSession.expires_at <= now))
    session_id = secrets.token_urlsafe(32)
    session.add(
        DashboardSession(
            session_hash=hash_session_id(session_id),
            token_hash=token_hash,
            created_at=now,
            expires_at=now + ttl,
        )
    )
    return session_id


def session_token_hash(session: Session, session_id: str, now: datetime) -> str | None:
    """The hash of the token behind a live session; None when unknown or expired."""
    row = session.scalars(
        select(DashboardSession).where(DashboardSession.session_hash == hash_session_id(session_id))
    ).one_or_none()
    if row is None or row.expires_at <= now:
        return None
    return row.token_hash


def end_session(session: Session, session_id: str) -> None:
    """Delete a session; unknown ids are ignored (signing out twice is harmless)."""
    session.execute(
        delete(DashboardSession).where(DashboardSession.session_hash == hash_session_id(session_id))
    )
