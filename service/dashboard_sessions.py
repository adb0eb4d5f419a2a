"""The dashboard's sign-in sessions, kept in the service database.

The cookie carries a random session id, never the token; the database keeps
hashes of both (:mod:`storage.dashboard_sessions`). The token behind a
session is verified again on every request, so revoking it ends the session
at once, and every dashboard process on the same database (after a restart,
or another replica) accepts the sessions the others started.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from service.auth import BOOTSTRAP_ADMIN
from storage.dashboard_sessions import end_session, session_token_hash, start_session
from storage.db import Database
from storage.errors import UnauthorizedError
from storage.tokens import Principal, authenticate_hash, hash_token

SESSION_COOKIE = "hpo_dashboard_session"
SESSION_TTL_S = 12 * 3600


class SessionStore:
    """Sign-in sessions on ``db``; ``clock`` is wall-clock seconds (replaceable in tests).

    A store made without a database is a policy (lifetime, clock) waiting for
    one: :meth:`bound_to` gives the store that the dashboard uses. Methods
    block on the database; call them off the event loop.
    """

    def __init__(
        self,
        db: Database | None = None,
        *,
        ttl_s: float = SESSION_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.clock = clock

    def bound_to(self, db: Database) -> SessionStore:
        """This store's lifetime and clock on ``db``."""
        return SessionStore(db, ttl_s=self.ttl_s, clock=self.clock)

    def create(self, token: str) -> str:
        """Start a session for a verified ``token``; return the id for the cookie.

        Raises:
            UnavailableError: the service database could not be reached.
        """
        with self._database().session_scope() as session:
            return start_session(session, hash_token(token), self._now(), self._ttl())

    def principal(self, session_id: str, admin_token: str | None) -> Principal | None:
        """Who the live session ``session_id`` signed in as; None when unknown or expired.

        ``admin_token`` is the bootstrap admin token (``HPO_ADMIN_TOKEN``), which
        has no row of its own: a session it started lasts while it is unchanged.

        Raises:
            UnauthorizedError: the session's token was revoked; the session is ended.
            UnavailableError: the service database could not be reached.
        """
        with self._database().session_scope() as session:
            digest = session_token_hash(session, session_id, self._now())
            if digest is None:
                return None
            principal = _principal_of(session, digest, admin_token)
            if principal is None:
                end_session(session, session_id)
        if principal is None:
            raise UnauthorizedError("invalid or revoked API token")
        return principal

    def discard(self, session_id: str) -> None:
        """End a session (signing out); unknown ids are ignored."""
        with self._database().session_scope() as session:
            end_session(session, session_id)

    def _database(self) -> Database:
        if self.db is None:
            raise RuntimeError("SessionStore.bound_to(db) first")
        return self.db

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), UTC)

    def _ttl(self) -> timedelta:
        return timedelta(seconds=self.ttl_s)


def _principal_of(session: Session, digest: str, admin_token: str | None) -> Principal | None:
    if admin_token and hmac.compare_digest(digest, hash_token(admin_token)):
        return BOOTSTRAP_ADMIN
    return authenticate_hash(session, digest)
