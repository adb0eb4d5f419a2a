"""API tokens: shown once, stored as SHA-256 hashes, compared in constant time."""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.errors import NotFoundError
from storage.events import record_event
from storage.models import ApiToken, utcnow

TOKEN_PREFIX = "hpo_"
# Recording every use would turn each read request into a write.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class Scope(enum.IntEnum):
    """Each scope includes the ones below it."""

    READ = 1
    WRITE = 2
    ADMIN = 3

    @classmethod
    def parse(cls, name: str) -> Scope:
        return cls[name.upper()]


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name and scope."""

    name: str
    scope: Scope

    def allows(self, needed: Scope) -> bool:
        return self.scope >= needed


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    session: Session, name: str, scope: Scope, actor: str | None
) -> tuple[ApiToken, str]:
    """Store a new token's hash; return the row and the token (the only time it is seen)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(
        name=name,
        scope=scope.name.lower(),
        token_hash=hash_token(token),
        prefix=token[: len(TOKEN_PREFIX) + 6],
    )
    session.add(row)
    record_event(session, "token_created", None, actor, token_name=name, scope=scope.name.lower())
    return row, token


def authenticate(session: Session, token: str) -> Principal | None:
    """The principal of a stored, unrevoked token; None if there is none."""
    return authenticate_hash(session, hash_token(token))


def authenticate_hash(session: Session, digest: str) -> Principal | None:
    """:func:`authenticate` for a token known only by its hash (a sign-in session's)."""
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == digest)).one_or_none()
    if row is None or row.revoked_at is not None:
        return None
    # The lookup is by hash; compare again in constant time all the same.
    if not hmac.compare_digest(row.token_hash, digest):
        return None
    now = utcnow()
    if row.last_used_at is None or now - row.last_used_at > LAST_USED_RESOLUTION:
        row.last_used_at = now
    return Principal(row.name, Scope.parse(row.scope))


def list_tokens(session: Session) -> list[ApiToken]:
    return list(session.scalars(select(ApiToken).order_by(ApiToken.id)).all())


def revoke_token(session: Session, token_id: int, actor: str | None) -> None:
    """Revoke a token by id.

    Raises:
        NotFoundError: no such token.
    """
    row = session.get(ApiToken, token_id)
    if row is None:
        raise NotFoundError(f"token {token_id} not found")
    row.revoked_at = row.revoked_at or utcnow()
    record_event(session, "token_revoked", None, actor, token_name=row.name)
