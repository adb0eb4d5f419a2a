"""Errors raised below the route layer, each with a stable code.

``service/errors.py`` maps the codes to HTTP statuses in one table; the CLI
and the workers read the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from storage.states import ErrorCode

# A message quotes at most this much of what a user sent: a refused 900 KB
# string must not come back whole in the answer, nor fill the logs.
QUOTE_LIMIT = 80


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """``text``, or when longer its first ``limit`` characters, ``…`` and its length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def quote(value: object, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)`` for a message, shortened as :func:`shorten` does.

    A string keeps its quotes around the prefix (``'abc'… (900000 characters)``),
    so that the cut is not mistaken for the value.
    """
    if not isinstance(value, str):
        return shorten(repr(value), limit)
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}… ({len(value)} characters)"


@dataclass(frozen=True)
class ErrorDetail:
    """One problem with a request, located by the path of the offending field."""

    loc: tuple[str | int, ...]
    msg: str

    def as_dict(self) -> dict[str, Any]:
        return {"loc": list(self.loc), "msg": self.msg}


@dataclass
class HpoError(Exception):
    """Base class: a message that is safe to show a client, and details."""

    message: str
    errors: list[ErrorDetail] = field(default_factory=list)
    code: ErrorCode = ErrorCode.INTERNAL

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        details = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in self.errors)
        return f"{self.message} ({details})"


@dataclass
class InvalidSpecError(HpoError):
    code: ErrorCode = ErrorCode.INVALID_SPEC


@dataclass
class InvalidRequestError(HpoError):
    code: ErrorCode = ErrorCode.INVALID_REQUEST


@dataclass
class NotFoundError(HpoError):
    code: ErrorCode = ErrorCode.NOT_FOUND


@dataclass
class ConflictError(HpoError):
    code: ErrorCode = ErrorCode.CONFLICT


@dataclass
class UnauthorizedError(HpoError):
    code: ErrorCode = ErrorCode.UNAUTHORIZED


@dataclass
class ForbiddenError(HpoError):
    code: ErrorCode = ErrorCode.FORBIDDEN


@dataclass
class UnavailableError(HpoError):
    """A dependency (database, tracking server) is down; retrying may succeed."""

    code: ErrorCode = ErrorCode.UNAVAILABLE


def invalid_spec(loc: tuple[str | int, ...], msg: str) -> InvalidSpecError:
    """Shorthand for a spec error about one field."""
    return InvalidSpecError("invalid study spec", [ErrorDetail(loc, msg)])
