"""FastAPI dependencies: the app's state and the caller's principal."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from service.auth import check_scope, resolve_principal
from service.middleware import PRINCIPAL_KEY
from service.state import AppState
from storage.tokens import Principal, Scope


def get_state(request: Request) -> AppState:
    state: AppState = request.app.state.hpo
    return state


StateDep = Annotated[AppState, Depends(get_state)]


_bearer = HTTPBearer(auto_error=False, description="an API token (hpo token create)")


def _principal(
    request: Request,
    state: StateDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    # AuthenticateFirst has already verified the token of a request with a body.
    known = request.scope.get("state", {}).get(PRINCIPAL_KEY)
    if isinstance(known, Principal):
        return known
    return resolve_principal(state, credentials.credentials if credentials else None)


def require(scope: Scope) -> object:
    """A dependency that admits callers with at least ``scope``."""

    def dependency(principal: Annotated[Principal, Depends(_principal)]) -> Principal:
        return check_scope(principal, scope)

    return Depends(dependency)


ReadDep = Annotated[Principal, require(Scope.READ)]
WriteDep = Annotated[Principal, require(Scope.WRITE)]
AdminDep = Annotated[Principal, require(Scope.ADMIN)]
