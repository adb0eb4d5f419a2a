"""``hpo worker``: one child process per device slot, restarted when it dies.

The supervisor also reaps leases of dead workers (anywhere) so that their
trials are failed and retried within the heartbeat grace period.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from types import FrameType

from storage.db import Database, bound_idle_transactions
from storage.optuna_store import open_optuna_storage
from storage.pools import SUPERVISOR_OPTUNA, SUPERVISOR_SERVICE
from storage.reaper import Reaper
from storage.settings import Settings
from workers.wakeup import WakeupRelay

logger = logging.getLogger(__name__)
MAX_RESTART_DELAY_S = 30.0
SUMMARY_INTERVAL_S = 15.0


class DeviceError(ValueError):
    """``--devices`` names something this machine does not have."""


@dataclass(frozen=True)
class Device:
    torch_device: str  # what the task uses inside its process
    label: str  # what users see
    visible: str  # CUDA_VISIBLE_DEVICES for the child ("" hides every GPU)


@dataclass
class Child:
    device: Device
    slot: int
    memory_budget: int | None = None  # a packed slot (``--per-device auto``)
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    next_start: float = 0.0
    done: bool = False
    wakeup_fd: int | None = None  # read end of its pipe from the wake-up relay


def cuda_device_count() -> int:
    try:
        import torch
    except ImportError:
        return 0
    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def resolve_devices(devices: str, cuda_count: int | None = None) -> list[Device]:
    """``auto`` (every visible GPU, else the CPU), ``cpu``, or GPU indices ``0,1``.

    Raises:
        DeviceError: an index that is not a visible GPU.
    """
    value = devices.strip().lower()
    if value == "cpu":
        return [Device("cpu", "cpu", "")]
    count = cuda_device_count() if cuda_count is None else cuda_count
    if value == "auto":
        if count == 0:
            return [Device("cpu", "cpu", "")]
        return [Device("cuda", f"cuda:{i}", str(i)) for i in range(count)]
    try:
        indices = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise DeviceError(f"--devices {devices!r}: use auto, cpu or GPU indices like 0,1") from None
    missing = [i for i in indices if not 0 <= i < count]
    if missing or not indices:
        raise DeviceError(f"--devices {devices!r}: this machine has {count} visible GPU(s)")
    return [Device("cuda", f"cuda:{i}", str(i)) for i in indices]


def parse_per_device(value: str) -> int | None:
    """``auto`` (None: as many as fit, see workers/packing.py) or a count from 1 to 64.

    Raises:
        DeviceError: anything else.
    """
    if value.strip().lower() == "auto":
        return None
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= 64:
        raise DeviceError(f"--per-device {value!r}: use auto or a number from 1 to 64")
    return count


def plan_children(
    devices: list[Device], per_device: int | None, declared_gib: float | None
) -> list[Child]:
    """The slots to run: ``per_device`` on each device, or packed ones sized by its memory."""
    if per_device is not None:
        return [Child(d, s) for d in devices for s in range(per_device)]
    from workers.packing import auto_slot_count, packing_budget, probe_free_bytes

    children = []
    for device in devices:
        free = probe_free_bytes(device.torch_device, device.visible, declared_gib)
        slots = auto_slot_count(device.torch_device, free)
        budget = packing_budget(device.torch_device, free, slots)
        logger.info(
            "packing %s: %.0f MiB free, %d slot(s) sharing %.0f MiB for their trials",
            device.label,
            free / 2**20,
            slots,
            budget / 2**20,
        )
        children += [Child(device, s, memory_budget=budget) for s in range(slots)]
    return children


class StudySummaries:
    """Tracking work no trial does: summaries of studies that ended while no trial of
    theirs ran (cancel...), and ending the MLflow runs of trials lost with their worker.
    """

    def __init__(self, settings: Settings, db: Database) -> None:
        from workers.tracking.tracker import MlflowTracker

        self.db = db
        self.settings = settings
        self.tracker = MlflowTracker(settings, db, spool_name=f"supervisor-{os.getpid()}")
        self.queued: dict[int, float] = {}  # study id -> when its summary was queued

    def queue_ended(self) -> None:
        """Queue the summary of ended studies (again if a queued one did not get written)."""
        from storage.tracking_rows import SUMMARY_CLAIM_S, studies_to_summarize
        from workers.tracking.ops import Op

        try:
            with self.db.session_scope(read_only=True) as session:
                studies = studies_to_summarize(session)
        except Exception:
            logger.warning("cannot look for ended studies: database unavailable")
            return
        now = time.monotonic()
        for study_id, name in studies:
            if now - self.queued.get(study_id, -SUMMARY_CLAIM_S) >= SUMMARY_CLAIM_S:
                self.queued[study_id] = now
                self.tracker.put(Op("summary", name, study_id=study_id))

    def queue_sweeps(self) -> None:
        """End the runs of lost trials of studies tracked in MLflow (one sweep queued each)."""
        from storage.tracking_rows import studies_to_sweep
        from workers.tracking.ops import Op

        try:
            with self.db.session_scope(read_only=True) as session:
                studies = studies_to_sweep(session)
        except Exception:
            logger.warning("cannot look for lost MLflow runs: database unavailable")
            return
        for study_id, name in studies:
            if not self.tracker.has_pending("sweep", study_id):
                self.tracker.put(Op("sweep", name, study_id=study_id))

    def close(self) -> None:
        self.tracker.close(self.settings.mlflow_flush_timeout_s)


@dataclass
class Supervisor:
    settings: Settings
    devices: list[Device]
    per_device: int | None = 1  # None: ``auto``, packed by memory
    studies: list[str] = field(default_factory=list)
    max_trials: int | None = None
    exit_when_idle: bool = False
    stopping: bool = False
    children: list[Child] = field(default_factory=list)

    def run(self) -> int:
        """Run until every slot is done or a stop signal arrives; returns 0."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        self.children = plan_children(
            self.devices, self.per_device, self.settings.device_memory_gib
        )
        # One LISTEN connection for all slots instead of one each.
        relay = WakeupRelay.for_settings(self.settings)
        if relay is not None:
            for child in self.children:
                child.wakeup_fd = relay.add_slot()
            relay.start()
        reaper = self._reaper()
        summaries = (
            StudySummaries(self.settings, reaper.db) if self.settings.mlflow_enabled else None
        )
        next_reap = next_summary = 0.0
        while not self.stopping and not all(c.done for c in self.children):
            for child in self.children:
                self._tend(child)
            now = time.monotonic()
            if now >= next_reap:
                reaper.run_once()
                next_reap = now + self.settings.heartbeat_interval_s
            if summaries is not None and now >= next_summary:
                summaries.queue_sweeps()
                summaries.queue_ended()
                next_summary = now + SUMMARY_INTERVAL_S
            time.sleep(0.2)
        self._stop_children()
        if relay is not None:
            relay.close()
        if summaries is not None:
            summaries.queue_sweeps()
            summaries.queue_ended()
            summaries.close()
        reaper.db.dispose()
        return 0

    def _reaper(self) -> Reaper:
        database = Database(
            self.settings.database_url,
            **SUPERVISOR_SERVICE.engine_kwargs(self.settings.database_url),
        )
        storage = open_optuna_storage(self.settings.optuna_storage, pool=SUPERVISOR_OPTUNA)
        # A frozen supervisor must not hold the row locks other reapers wait on either.
        for engine in (database.engine, storage.engine):
            bound_idle_transactions(engine, self.settings.heartbeat_grace_s)
        return Reaper(
            database, storage, self.settings.heartbeat_grace_s, self.settings.fail_fast_trials
        )

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        logger.info("stopping %d worker slot(s)", len(self.children))
        self.stopping = True

    def _tend(self, child: Child) -> None:
        if child.done:
            return
        if child.proc is not None:
            code = child.proc.poll()
            if code is None:
                return
            child.proc = None
            if code == 0:
                child.done = True
                return
            child.restarts += 1
            delay = min(MAX_RESTART_DELAY_S, 2.0 ** min(child.restarts, 5) / 2)
            child.next_start = time.monotonic() + delay
            logger.warning(
                "slot %s/%d exited with %d; restarting in %.0fs",
                child.device.label,
                child.slot,
                code,
                delay,
            )
        if time.monotonic() >= child.next_start:
            child.proc = self._spawn(child)

    def _spawn(self, child: Child) -> subprocess.Popen[bytes]:
        args = [
            sys.executable,
            "-m",
            "workers.slot",
            "--device",
            child.device.torch_device,
            "--device-label",
            child.device.label,
            "--slot",
            str(child.slot),
        ]
        for name in self.studies:
            args += ["--study", name]
        if self.max_trials is not None:
            args += ["--max-trials", str(self.max_trials)]
        if self.exit_when_idle:
            args.append("--exit-when-idle")
        if child.memory_budget is not None:
            args += ["--memory-budget", str(child.memory_budget)]
        if child.device.torch_device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            args.append("--share-cores")
        inherited: tuple[int, ...] = ()
        if child.wakeup_fd is not None:
            args += ["--wakeup-fd", str(child.wakeup_fd)]
            inherited = (child.wakeup_fd,)
        return subprocess.Popen(args, env=self._child_env(child), pass_fds=inherited)

    def _child_env(self, child: Child) -> dict[str, str]:
        env = dict(os.environ)
        env["CUDA_VISIBLE_DEVICES"] = child.device.visible
        if child.device.torch_device == "cpu":
            # CPU slots share the cores instead of each starting one thread per core;
            # with --share-cores each trial then takes its share of every worker's slots.
            cpu_slots = sum(1 for c in self.children if c.device.torch_device == "cpu")
            threads = str(max(1, (os.cpu_count() or 1) // max(1, cpu_slots)))
            env.setdefault("OMP_NUM_THREADS", threads)
            env.setdefault("MKL_NUM_THREADS", threads)
        return env

    def _stop_children(self) -> None:
        running = [c.proc for c in self.children if c.proc is not None and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.settings.shutdown_grace_s + 30
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("slot process %d did not stop; killing it", proc.pid)
                proc.kill()
                proc.wait()
