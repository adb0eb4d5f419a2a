"""Documented error responses for the OpenAPI schema."""

from __future__ import annotations

from typing import Any

from service.schemas import ErrorOut

# Offsets stay within a 32-bit integer: databases refuse bigger ones.
MAX_OFFSET = 2**31 - 1
_DESCRIPTIONS = {
    400: "the body cannot be parsed (not UTF-8 text, or not JSON at all)",
    401: "no valid API token",
    403: "the token's scope is too small",
    404: "not found",
    409: "conflict with the current state",
    413: "request body too large",
    422: "invalid input; errors[].loc gives the path of each offending field",
    503: "a database is temporarily unavailable",
}


def errors_for(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` entries for the given error statuses."""
    return {code: {"model": ErrorOut, "description": _DESCRIPTIONS[code]} for code in statuses}
