"""Backoff for clients that guess dashboard tokens.

Token checks that fail are counted per client address: after
``FREE_FAILURES`` of them each further attempt waits twice as long as the
one before (up to ``MAX_BACKOFF_S``), whether it comes through the sign-in
form or a bearer header.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

from storage.errors import HpoError
from storage.states import ErrorCode

FREE_FAILURES = 5
MAX_BACKOFF_S = 300.0
# A client that stopped failing this long ago starts afresh.
FORGET_FAILURES_AFTER_S = 900.0
MAX_TRACKED_CLIENTS = 10_000


@dataclass
class _Failures:
    count: int = 0
    last_at: float = field(default=0.0)


class LoginThrottle:
    """Exponential backoff per client address for failed token checks.

    Thread-safe and bounded: at most ``max_clients`` addresses are tracked
    (the least recently failing are forgotten first).
    """

    def __init__(
        self,
        free_failures: int = FREE_FAILURES,
        max_backoff_s: float = MAX_BACKOFF_S,
        forget_after_s: float = FORGET_FAILURES_AFTER_S,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free_failures = free_failures
        self.max_backoff_s = max_backoff_s
        self.forget_after_s = forget_after_s
        self.max_clients = max_clients
        self.clock = clock
        self._clients: OrderedDict[str, _Failures] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """Seconds ``client`` must wait before its next attempt (0 when it may try now)."""
        now = self.clock()
        with self._lock:
            failures = self._clients.get(client)
            if failures is None:
                return 0.0
            if now - failures.last_at > max(self.forget_after_s, self._backoff(failures.count)):
                del self._clients[client]
                return 0.0
            return max(0.0, failures.last_at + self._backoff(failures.count) - now)

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._clients.pop(client, None) or _Failures()
            failures.count += 1
            failures.last_at = self.clock()
            self._clients[client] = failures
            while len(self._clients) > self.max_clients:
                self._clients.popitem(last=False)

    def succeeded(self, client: str) -> None:
        with self._lock:
            self._clients.pop(client, None)

    def _backoff(self, count: int) -> float:
        over = count - self.free_failures
        if over < 0:
            return 0.0
        return min(self.max_backoff_s, 2.0 ** min(over, 30))


@dataclass
class TooManyAttemptsError(HpoError):
    """A client failed too many token checks; it may try again after ``retry_after_s``."""

    retry_after_s: int = 1
    code: ErrorCode = ErrorCode.TOO_MANY_REQUESTS
