"""Bearer-token authentication and scope checks."""

from __future__ import annotations

import hmac

from service.state import AppState
from storage.errors import ForbiddenError, UnauthorizedError
from storage.tokens import Principal, Scope, authenticate

ANONYMOUS_ADMIN = Principal("anonymous", Scope.ADMIN)
BOOTSTRAP_ADMIN = Principal("admin", Scope.ADMIN)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def resolve_principal(state: AppState, token: str | None, *, cached: bool = True) -> Principal:
    """Who presents ``token``.

    A stored token verified in the last few seconds is not looked up again
    (``state.tokens``: revocation takes effect within its TTL); ``cached=False``
    asks the database every time.

    Raises:
        UnauthorizedError: auth is on and the token is missing or unknown.
        UnavailableError: the token had to be looked up and the database is down.
    """
    if not state.auth_enabled:
        return ANONYMOUS_ADMIN
    if not token:
        raise UnauthorizedError("an API token is required (Authorization: Bearer <token>)")
    admin = state.settings.admin_token or ""
    if hmac.compare_digest(token.encode(), admin.encode()):
        return BOOTSTRAP_ADMIN
    principal = (
        state.tokens.lookup(token, lambda t: _authenticate(state, t))
        if cached
        else _authenticate(state, token)
    )
    if principal is None:
        raise UnauthorizedError("invalid or revoked API token")
    return principal


def _authenticate(state: AppState, token: str) -> Principal | None:
    with state.db.session_scope() as session:
        return authenticate(session, token)


def check_scope(principal: Principal, needed: Scope) -> Principal:
    """Raises ForbiddenError when ``principal`` lacks ``needed``."""
    if not principal.allows(needed):
        raise ForbiddenError(
            f"this token has the {principal.scope.name.lower()} scope; "
            f"{needed.name.lower()} is needed"
        )
    return principal
