"""Errors to HTTP in one place: one table from stable codes to statuses."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException

from storage.db import is_connection_error
from storage.errors import HpoError

logger = logging.getLogger(__name__)

STATUS_BY_CODE: dict[str, int] = {
    "invalid_spec": 422,
    "invalid_request": 422,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "payload_too_large": 413,
    "too_many_requests": 429,
    "unavailable": 503,
    "internal": 500,
}
_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    422: "invalid_request",
    429: "too_many_requests",
}


def error_body(
    code: str, message: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {"code": code, "message": message, "errors": errors or []}


def error_response(
    code: str,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, errors), STATUS_BY_CODE[code], headers=headers)


async def _hpo_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HpoError)
    headers = {"WWW-Authenticate": "Bearer"} if exc.code == "unauthorized" else None
    if exc.code == "unavailable":
        headers = {"Retry-After": "5"}
    return error_response(exc.code, exc.message, [e.as_dict() for e in exc.errors], headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    in_body = False
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "malformed")
            errors.append({"loc": [], "msg": f"the body is not valid JSON ({reason})"})
            in_body = True
            continue
        loc = list(err.get("loc", ()))
        in_body = in_body or (bool(loc) and loc[0] == "body")
        # Spec errors name the field inside the document, not the request part.
        if loc and loc[0] == "body":
            loc = loc[1:]
        loc = [p for p in loc if not (isinstance(p, str) and p in {"float", "int", "categorical"})]
        errors.append(
            {"loc": loc, "msg": str(err.get("msg", "invalid")).removeprefix("Value error, ")}
        )
    is_spec = in_body and request.url.path.endswith("/studies") and request.method == "POST"
    code = "invalid_spec" if is_spec else "invalid_request"
    message = "invalid study spec" if is_spec else "invalid request"
    return error_response(code, message, errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, "invalid_request")
    status = exc.status_code
    return JSONResponse(error_body(code, str(exc.detail)), status, headers=exc.headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if is_connection_error(exc):
        return error_response(
            "unavailable", "the database is temporarily unavailable", headers={"Retry-After": "5"}
        )
    logger.exception("database error on %s %s", request.method, request.url.path)
    return error_response("internal", "internal error")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never show an internal exception's text to a client; the log has it.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response("internal", "internal error")


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    # Optuna wraps a failed database call in its own exception.
    logger.warning("Optuna storage error on %s %s", request.method, request.url.path)
    return error_response(
        "unavailable", "the Optuna storage is temporarily unavailable", headers={"Retry-After": "5"}
    )


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HpoError, _hpo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(StorageInternalError, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
