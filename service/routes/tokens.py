"""``/tokens``: API tokens (admin scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response, status

from service.deps import AdminDep, StateDep
from service.responses import errors_for
from service.schemas import TokenCreated, TokenIn, TokenList, TokenOut
from storage import tokens

router = APIRouter(prefix="/tokens", tags=["tokens"])


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TokenCreated,
    responses=errors_for(400, 401, 403, 422, 503),
)
def create_token(body: TokenIn, state: StateDep, principal: AdminDep) -> TokenCreated:
    """A new token; the response is the only place it appears."""
    with state.db.session_scope() as session:
        row, token = tokens.create_token(
            session, body.name, tokens.Scope.parse(body.scope), principal.name
        )
        session.flush()
        return TokenCreated(id=row.id, name=row.name, scope=row.scope, token=token)


@router.get("", response_model=TokenList, responses=errors_for(401, 403, 503))
def list_tokens(state: StateDep, _: AdminDep) -> TokenList:
    """Tokens without their secrets."""
    with state.db.session_scope(read_only=True) as session:
        rows = tokens.list_tokens(session)
        return TokenList(items=[TokenOut.model_validate(r, from_attributes=True) for r in rows])


@router.delete(
    "/{token_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=errors_for(401, 403, 404, 422, 503),
)
def revoke_token(
    token_id: Annotated[int, Path(ge=1, le=2**31 - 1)], state: StateDep, principal: AdminDep
) -> Response:
    """Revoke a token; it stops working at once (other API processes: within 5 s)."""
    with state.db.session_scope() as session:
        tokens.revoke_token(session, token_id, principal.name)
    state.tokens.clear()  # this process forgets it now; the others when their entries expire
    return Response(status_code=status.HTTP_204_NO_CONTENT)
