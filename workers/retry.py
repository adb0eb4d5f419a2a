"""Retrying with backoff while a database or the tracking server is unavailable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
from sqlalchemy.exc import DBAPIError

from storage.db import is_connection_error, is_outage
from storage.errors import UnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")
# MLflow error codes that say "not now" rather than "never".
TRANSIENT_CODES = {"TEMPORARILY_UNAVAILABLE", "REQUEST_LIMIT_EXCEEDED", "INTERNAL_ERROR"}
_TRANSIENT_HINTS = (
    "connection",
    "max retries",
    "timed out",
    "timeout",
    "database is locked",
    "temporarily",
    "status code 50",
    "unavailable",
)


def backoff_delays(total_s: float, first_s: float = 0.5, cap_s: float = 15.0) -> Iterator[float]:
    """Exponential backoff delays until ``total_s`` seconds are used."""
    spent, delay = 0.0, first_s
    while spent < total_s:
        yield delay
        spent += delay
        delay = min(cap_s, delay * 2)


def is_transient(exc: BaseException) -> bool:
    """A failure that retrying may cure: a database down, busy or restarting.

    Optuna wraps every database error of a storage call in
    ``StorageInternalError``: only one caused by a lost or refused connection
    is worth waiting for; a data error would fail the same way at every try.
    """
    if isinstance(exc, UnavailableError):
        return True
    if isinstance(exc, optuna.exceptions.StorageInternalError):
        return is_outage(exc)
    return isinstance(exc, DBAPIError) and is_connection_error(exc)


def is_transient_remote(exc: BaseException) -> bool:
    """A failure to reach a remote service such as MLflow, as opposed to a refused request.

    Broader than :func:`is_transient`: any network-level failure, and any
    error of an HTTP or database client library, counts, because a tracking
    call is retried until it is accepted. Optuna's storage errors do not: a
    tracking operation that fails on them is not retried forever.
    """
    if isinstance(exc, OSError | TimeoutError):
        return True
    module = type(exc).__module__
    if module.startswith(("requests", "urllib3", "sqlalchemy", "http.client")):
        return True
    if getattr(exc, "error_code", None) in TRANSIENT_CODES:
        return True
    text = str(exc).lower()
    return any(hint in text for hint in _TRANSIENT_HINTS)


def call_with_retries(call: Callable[[], T], total_s: float, what: str) -> T:
    """``call()``, retried with backoff for up to ``total_s`` on transient failures."""
    for delay in backoff_delays(total_s):
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning(
                "%s: database unavailable (%s); retrying in %.1fs", what, type(exc).__name__, delay
            )
            time.sleep(delay)
    return call()
