"""Liveness and readiness (no authentication: orchestrators call these)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from service.deps import StateDep
from service.errors import error_body, headers_for
from service.responses import errors_for
from service.schemas import HealthOut
from storage.states import ErrorCode

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthOut)
def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut(status="ok")


@router.get("/readyz", response_model=HealthOut, responses=errors_for(503))
def readyz(state: StateDep) -> HealthOut | JSONResponse:
    """Both databases answer."""
    checks: dict[str, str] = {}
    engines = {"database": state.db.engine, "optuna_storage": state.optuna.engine}
    for name, engine in engines.items():
        try:
            with engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            checks[name] = "ok"
        except DBAPIError:
            checks[name] = "unavailable"
    if all(v == "ok" for v in checks.values()):
        return HealthOut(status="ready", checks=checks)
    down = ", ".join(n for n, v in checks.items() if v != "ok")
    return JSONResponse(
        error_body(ErrorCode.UNAVAILABLE, f"not ready: {down} unavailable"),
        503,
        headers=headers_for(ErrorCode.UNAVAILABLE),
    )
