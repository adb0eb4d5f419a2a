"""Work the API process does on its own: reaping leases of dead workers.

Workers' supervisors reap too; the API does it as well so that a study whose
workers all died still gets its lost trials failed and re-queued.
"""

from __future__ import annotations

import logging
import threading

from service.state import AppState
from storage.reaper import Reaper

logger = logging.getLogger(__name__)


class ReaperThread(threading.Thread):
    def __init__(self, state: AppState) -> None:
        super().__init__(name="reaper", daemon=True)
        settings = state.settings
        self.reaper = Reaper(
            state.db, state.optuna, settings.heartbeat_grace_s, settings.fail_fast_trials
        )
        self.interval_s = settings.heartbeat_interval_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval_s):
            try:
                self.reaper.run_once()
            except Exception:
                logger.exception("reaper pass failed")

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)
