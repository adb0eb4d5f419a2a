"""The loop of one worker slot: claim, run, repeat; stop cleanly on SIGTERM."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from types import FrameType
from typing import TYPE_CHECKING

from storage.budget import Claim, ClaimRequest, claim_slot, pending_work, release_lease
from storage.errors import UnavailableError
from storage.settings import Settings
from storage.states import FailReason
from storage.workers import register_worker, stop_worker
from workers.retry import is_transient
from workers.slot_env import SlotEnv, SlotOptions
from workers.trial import run_claim
from workers.trial_dirs import TrialDirs
from workers.wakeup import Wakeup

if TYPE_CHECKING:
    from workers.tracking.tracker import MlflowTracker

logger = logging.getLogger(__name__)
GATE_POLL_S = 0.2


class SlotRunner:
    def __init__(self, settings: Settings, options: SlotOptions) -> None:
        self.settings = settings
        self.options = options
        self.env = SlotEnv(settings, options)
        self.tracker = self._tracker() if settings.mlflow_enabled else None
        if settings.tensorboard_dir is not None:
            from workers.tracking.tensorboard import TensorBoardCurves

            TensorBoardCurves(self.env, settings.tensorboard_dir).install()
        # After tracking's hook: a best model it just queued for MLflow is protected.
        TrialDirs(self.env).install()
        self.env.install_host_sharing()
        self.wakeup = Wakeup.for_slot(settings, options.wakeup_fd)
        self.stopping = threading.Event()
        self._grace_timer: threading.Timer | None = None
        self.trials_run = 0
        self.env.claim_request = self._next_request

    def _tracker(self) -> MlflowTracker:
        from workers.tracking.hooks import TrialTracking
        from workers.tracking.tracker import MlflowTracker

        tracker = MlflowTracker(self.settings, self.env.db, spool_name=self.env.worker_id)
        TrialTracking(self.env, tracker).install()
        return tracker

    def install_signals(self) -> None:
        self.env.interrupter.install()
        signal.signal(signal.SIGTERM, self._on_stop_signal)
        signal.signal(signal.SIGINT, self._on_stop_signal)

    def _on_stop_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stopping.is_set():
            return
        logger.info(
            "stop requested (signal %d): no new trials; the running one has %.0fs",
            signum,
            self.settings.shutdown_grace_s,
        )
        self.stopping.set()
        self.env.heartbeat.stopping = True
        self.wakeup.interrupt()
        # After the grace period the running trial is handed back (FAIL + retry).
        self._grace_timer = threading.Timer(
            self.settings.shutdown_grace_s, self.env.interrupter.request, (FailReason.INTERRUPTED,)
        )
        self._grace_timer.daemon = True
        self._grace_timer.start()

    def run(self) -> int:
        """Claim and run trials until stopped, out of work, or out of ``--max-trials``."""
        self._register()
        self.env.heartbeat.start()
        try:
            while not self.stopping.is_set() and not self._reached_max():
                # A slot claimed with the last settlement passed the gates then.
                if self.env.next_claim is None and not self.env.may_claim():
                    # A packed device is full, or one of its trials waits for room.
                    self.stopping.wait(GATE_POLL_S)
                    continue
                claim = self._claim()
                if claim is not None:
                    if run_claim(self.env, claim) is None:
                        # The trial could not start (logged); do not spin on a broken study.
                        self.stopping.wait(self.settings.poll_interval_s)
                        continue
                    self.trials_run += 1
                elif self.options.exit_when_idle and not self._pending():
                    logger.info("no work left; exiting")
                    break
                else:
                    self.wakeup.wait(self.settings.poll_interval_s)
        finally:
            self._shutdown()
        return 0

    def _next_request(self) -> ClaimRequest | None:
        """What to claim when a trial is settled; None when no trial follows it."""
        limit = self.options.max_trials
        last = limit is not None and self.trials_run + 1 >= limit
        if self.stopping.is_set() or last or not self.env.may_claim():
            return None
        return ClaimRequest(
            self.env.worker_id, self.options.device_label, self.options.studies or None
        )

    def _release_next_claim(self) -> None:
        claim, self.env.next_claim = self.env.next_claim, None
        if claim is None:
            return
        try:
            with self.env.db.session_scope() as session:
                release_lease(session, claim.lease_id, FailReason.SHUTDOWN)
        except Exception:
            logger.warning("could not hand back the slot of %s claimed last", claim.study_name)

    def _reached_max(self) -> bool:
        return self.options.max_trials is not None and self.trials_run >= self.options.max_trials

    def _claim(self) -> Claim | None:
        if self.env.next_claim is not None:
            # Claimed when the last trial was settled.
            claim, self.env.next_claim = self.env.next_claim, None
            return claim
        try:
            with self.env.db.session_scope() as session:
                return claim_slot(
                    session,
                    self.env.worker_id,
                    self.options.device_label,
                    self.options.studies or None,
                )
        except Exception as exc:
            if not is_transient(exc):
                raise
            logger.warning("cannot claim: database unavailable; waiting")
            self.stopping.wait(self.settings.poll_interval_s)
            return None

    def _pending(self) -> bool:
        try:
            with self.env.db.session_scope(read_only=True) as session:
                return pending_work(session, self.options.studies or None)
        except UnavailableError:
            return True

    def _register(self) -> None:
        def register() -> None:
            with self.env.db.session_scope() as session:
                register_worker(
                    session,
                    self.env.worker_id,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    device=self.options.device_label,
                    slot=self.options.slot,
                )

        self.env.retrying(register)
        logger.info("worker %s ready on %s", self.env.worker_id, self.options.device_label)

    def _shutdown(self) -> None:
        if self._grace_timer is not None:
            self._grace_timer.cancel()
        self._release_next_claim()
        self.env.heartbeat.stop()
        try:
            with self.env.db.session_scope() as session:
                stop_worker(session, self.env.worker_id)
        except Exception:
            logger.warning("could not mark worker %s stopped", self.env.worker_id)
        self.wakeup.close()
        if self.tracker is not None:
            self.tracker.close(self.settings.mlflow_flush_timeout_s)
        self.env.close()
