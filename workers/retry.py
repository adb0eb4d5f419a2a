"""Retrying database work with backoff while a database is unavailable."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import optuna
from sqlalchemy.exc import DBAPIError

from storage.db import is_connection_error
from storage.errors import UnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")


def backoff_delays(total_s: float, first_s: float = 0.5, cap_s: float = 15.0) -> Iterator[float]:
    """Exponential backoff delays until ``total_s`` seconds are used."""
    spent, delay = 0.0, first_s
    while spent < total_s:
        yield delay
        spent += delay
        delay = min(cap_s, delay * 2)


def is_transient(exc: BaseException) -> bool:
    """A failure that retrying may cure: a database down, busy or restarting."""
    if isinstance(exc, UnavailableError | optuna.exceptions.StorageInternalError):
        return True
    return isinstance(exc, DBAPIError) and is_connection_error(exc)


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
