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

from storage.db import is_connection_error, is_outage
from storage.errors import HpoError, shorten
from storage.spec import error_message
from storage.states import ErrorCode

logger = logging.getLogger(__name__)

STATUS_BY_CODE: dict[ErrorCode, int] = {
    ErrorCode.INVALID_SPEC: 422,
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.CONFLICT: 409,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.UNAVAILABLE: 503,
    ErrorCode.INTERNAL: 500,
}
_CODE_BY_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.INVALID_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    422: ErrorCode.INVALID_REQUEST,
    429: ErrorCode.TOO_MANY_REQUESTS,
}

# An answer's messages are cut at this length (``storage.errors.shorten``).
MESSAGE_LIMIT = 1000

_HEADERS_BY_CODE: dict[ErrorCode, dict[str, str]] = {
    ErrorCode.UNAUTHORIZED: {"WWW-Authenticate": "Bearer"},
    ErrorCode.UNAVAILABLE: {"Retry-After": "5"},
}


def error_body(
    code: ErrorCode, message: str, errors: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    # The last guard: no message or path in an answer grows with what was sent
    # (values are quoted short where the messages are written: storage.errors.quote).
    bounded = [
        {
            **error,
            "loc": [shorten(p) if isinstance(p, str) else p for p in error.get("loc", [])],
            "msg": shorten(str(error.get("msg", "")), MESSAGE_LIMIT),
        }
        for error in errors or []
    ]
    return {"code": code, "message": shorten(message, MESSAGE_LIMIT), "errors": bounded}


def headers_for(code: ErrorCode) -> dict[str, str] | None:
    """What a client needs to act on an error: how to authenticate, when to retry."""
    return _HEADERS_BY_CODE.get(code)


def error_response(
    code: ErrorCode,
    message: str,
    errors: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(code, message, errors), STATUS_BY_CODE[code], headers=headers)


async def _hpo_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HpoError)
    errors = [e.as_dict() for e in exc.errors]
    return error_response(exc.code, exc.message, errors, headers_for(exc.code))


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
        errors.append({"loc": loc, "msg": error_message(err)})
    is_spec = in_body and request.url.path.endswith("/studies") and request.method == "POST"
    code = ErrorCode.INVALID_SPEC if is_spec else ErrorCode.INVALID_REQUEST
    message = "invalid study spec" if is_spec else "invalid request"
    return error_response(code, message, errors)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _CODE_BY_STATUS.get(exc.status_code, ErrorCode.INVALID_REQUEST)
    status = exc.status_code
    return JSONResponse(error_body(code, str(exc.detail)), status, headers=exc.headers)


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, DBAPIError)
    if is_connection_error(exc):
        return error_response(
            ErrorCode.UNAVAILABLE,
            "the database is temporarily unavailable",
            headers=headers_for(ErrorCode.UNAVAILABLE),
        )
    logger.exception("database error on %s %s", request.method, request.url.path)
    return error_response(ErrorCode.INTERNAL, "internal error")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # Never show an internal exception's text to a client; the log has it.
    logger.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(ErrorCode.INTERNAL, "internal error")


def storage_unavailable() -> JSONResponse:
    """The answer while Optuna's storage is out of reach (the API's and the dashboard's)."""
    return error_response(
        ErrorCode.UNAVAILABLE,
        "the Optuna storage is temporarily unavailable",
        headers=headers_for(ErrorCode.UNAVAILABLE),
    )


async def _storage_error(request: Request, exc: Exception) -> JSONResponse:
    # Optuna wraps every failed database call in its own exception; only a lost
    # or refused connection is an outage that waiting (Retry-After) cures.
    if is_outage(exc):
        logger.warning("Optuna storage unavailable on %s %s", request.method, request.url.path)
        return storage_unavailable()
    logger.exception("Optuna storage error on %s %s", request.method, request.url.path)
    return error_response(ErrorCode.INTERNAL, "internal error")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(HpoError, _hpo_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(StorageInternalError, _storage_error)
    app.add_exception_handler(Exception, _unexpected)
