"""Errors the client raises: one class for every failure of a call to the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class FieldError:
    """One problem with a request, located by the path of the offending field."""

    loc: tuple[str | int, ...]
    msg: str

    @property
    def path(self) -> str:
        """The field's path as ``a.b.0.c`` (``(document)`` for the whole body)."""
        return ".".join(str(part) for part in self.loc) or "(document)"

    def __str__(self) -> str:
        return f"{self.path}: {self.msg}"


class ApiError(Exception):
    """The API refused a request, or could not be reached.

    Attributes:
        status: the HTTP status; 0 when no response came (unreachable, timed out).
        code: the API's stable error code (``invalid_spec``, ``not_found``,
            ``conflict``, ``unauthorized``, ``forbidden``, ``unavailable``, ...),
            or ``unreachable`` / ``timeout`` when no response came.
        message: what went wrong, safe to show a user.
        errors: the offending fields, each with its path (``loc``) and reason.
        url: the URL that was called.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "unreachable",
        errors: list[FieldError] | None = None,
        url: str = "",
    ) -> None:
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors or []
        self.url = url
        super().__init__(str(self))

    def __str__(self) -> str:
        head = f"HTTP {self.status} {self.code}: {self.message}" if self.status else self.message
        if not self.errors:
            return head
        return head + " (" + "; ".join(str(e) for e in self.errors) + ")"


class ApiConnectionError(ApiError):
    """No connection to the API (wrong URL, server down): ``code == "unreachable"``."""


class ApiTimeout(ApiError):
    """The API did not answer in time: ``code == "timeout"``."""


_HINTS = {
    401: "set HPO_API_TOKEN (or Client(token=...)) to a valid token",
    403: "this token's scope is too small for the call",
}


def error_from_response(response: httpx.Response) -> ApiError:
    """The :class:`ApiError` for an error response (the API's JSON body when it has one)."""
    try:
        body: Any = response.json()
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = str(body.get("message") or response.reason_phrase or "request failed")
    hint = _HINTS.get(response.status_code)
    if hint:
        message = f"{message} ({hint})"
    errors = [
        FieldError(tuple(item.get("loc") or ()), str(item.get("msg", "")))
        for item in body.get("errors") or []
        if isinstance(item, dict)
    ]
    return ApiError(
        message,
        status=response.status_code,
        code=str(body.get("code") or f"http_{response.status_code}"),
        errors=errors,
        url=str(response.request.url),
    )


def error_from_transport(exc: httpx.TransportError, base_url: str) -> ApiError:
    """The :class:`ApiError` for a call that got no response, naming the URL."""
    url = str(exc.request.url) if _has_request(exc) else base_url
    if isinstance(exc, httpx.TimeoutException):
        return ApiTimeout(
            f"the API at {base_url} did not answer in time ({type(exc).__name__} on {url})",
            code="timeout",
            url=url,
        )
    return ApiConnectionError(
        f"cannot reach the API at {base_url} ({type(exc).__name__} on {url}); is `hpo serve` "
        "running there, and is HPO_API_URL right?",
        code="unreachable",
        url=url,
    )


def _has_request(exc: httpx.TransportError) -> bool:
    try:
        exc.request  # noqa: B018 - httpx raises RuntimeError when no request is attached
    except RuntimeError:
        return False
    return True
