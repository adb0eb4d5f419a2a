"""Stopping a running trial from another thread, at a safe point.

Timers and the heartbeat thread call :meth:`Interrupter.request`; the main
thread gets :class:`TrialInterrupted` at once (through SIGUSR1) unless it is
inside a critical section (a database write), in which case it gets it at
the next :meth:`check` — the trial context checks after every report.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from storage.states import FailReason
from workers.errors import TrialInterrupted


class Interrupter:
    def __init__(self) -> None:
        self.reason: FailReason | None = None
        self._armed = False
        self._critical = 0
        self._lock = threading.Lock()
        self._main_ident = threading.main_thread().ident

    def install(self) -> None:
        """Route SIGUSR1 to this interrupter (call from the main thread)."""
        signal.signal(signal.SIGUSR1, self._on_signal)

    def request(self, reason: FailReason) -> None:
        """Ask the running trial to stop; the first reason wins."""
        with self._lock:
            if not self._armed or self.reason is not None:
                return
            self.reason = reason
        if self._main_ident is not None:
            signal.pthread_kill(self._main_ident, signal.SIGUSR1)

    def check(self) -> None:
        """Raise the pending interruption, if any (outside critical sections)."""
        if self._armed and self._critical == 0 and self.reason is not None:
            raise TrialInterrupted(self.reason)

    @contextmanager
    def armed(self) -> Iterator[None]:
        """While a trial runs, requests interrupt it."""
        with self._lock:
            self.reason = None
            self._armed = True
        try:
            yield
        finally:
            with self._lock:
                self._armed = False

    @contextmanager
    def critical(self) -> Iterator[None]:
        """Defer interruptions until the block ends (then raise at once)."""
        self._critical += 1
        try:
            yield
        finally:
            self._critical -= 1
        self.check()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.check()
