"""Errors raised below the route layer, each with a stable code.

``service/errors.py`` maps the codes to HTTP statuses in one table; the CLI
and the workers read the same codes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


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
    code: str = "internal"

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __str__(self) -> str:
        if not self.errors:
            return self.message
        details = "; ".join(f"{'.'.join(map(str, e.loc))}: {e.msg}" for e in self.errors)
        return f"{self.message} ({details})"


@dataclass
class InvalidSpecError(HpoError):
    code: str = "invalid_spec"


@dataclass
class InvalidRequestError(HpoError):
    code: str = "invalid_request"


@dataclass
class NotFoundError(HpoError):
    code: str = "not_found"


@dataclass
class ConflictError(HpoError):
    code: str = "conflict"


@dataclass
class UnauthorizedError(HpoError):
    code: str = "unauthorized"


@dataclass
class ForbiddenError(HpoError):
    code: str = "forbidden"


@dataclass
class UnavailableError(HpoError):
    """A dependency (database, tracking server) is down; retrying may succeed."""

    code: str = "unavailable"


def invalid_spec(loc: tuple[str | int, ...], msg: str) -> InvalidSpecError:
    """Shorthand for a spec error about one field."""
    return InvalidSpecError("invalid study spec", [ErrorDetail(loc, msg)])
