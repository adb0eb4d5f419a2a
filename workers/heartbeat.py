"""The heartbeat thread of a worker slot: its worker row and its current lease."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from storage.budget import heartbeat_lease
from storage.db import Database
from storage.models import StudyStatus
from storage.states import FailReason
from storage.stopping import Usage
from storage.workers import heartbeat_worker
from workers.interrupt import Interrupter

logger = logging.getLogger(__name__)


@dataclass
class CurrentTrial:
    lease_id: int
    study_name: str
    trial_number: int | None = None
    usage: Callable[[], Usage] | None = None  # what the trial has used so far


class Heartbeat(threading.Thread):
    """Refreshes the worker row and the lease; interrupts a lost or cancelled trial.

    Database errors are logged and retried at the next beat: a short outage
    must not stop the trial (the reaper waits out a grace period).
    """

    def __init__(
        self, db: Database, worker_id: str, interval_s: float, interrupter: Interrupter
    ) -> None:
        super().__init__(name="heartbeat", daemon=True)
        self.db = db
        self.worker_id = worker_id
        self.interval_s = interval_s
        self.interrupter = interrupter
        self.current: CurrentTrial | None = None
        self.stopping = False
        self._stop_event = threading.Event()
        self._failing = False

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            self.beat()

    def stop(self) -> None:
        self._stop_event.set()

    def beat(self) -> None:
        current = self.current
        try:
            ours, status = True, None
            with self.db.session_scope() as session:
                if current is not None:
                    usage = current.usage() if current.usage is not None else None
                    ours, status = heartbeat_lease(session, current.lease_id, self.worker_id, usage)
                heartbeat_worker(
                    session,
                    self.worker_id,
                    status=self._status(current),
                    lease_id=current.lease_id if current else None,
                    study_name=current.study_name if current else None,
                    trial_number=current.trial_number if current else None,
                )
        except Exception as exc:
            if not self._failing:
                logger.warning("heartbeat failed (%s); retrying", type(exc).__name__)
            self._failing = True
            return
        if self._failing:
            logger.info("heartbeat recovered")
            self._failing = False
        if current is not None and current is self.current:
            if not ours:
                self.interrupter.request(FailReason.LOST)
            elif status == StudyStatus.CANCELLED:
                self.interrupter.request(FailReason.CANCELLED)

    def _status(self, current: CurrentTrial | None) -> str:
        if self.stopping:
            return "stopping"
        return "busy" if current is not None else "idle"
