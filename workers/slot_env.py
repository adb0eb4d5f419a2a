"""What one worker slot holds: databases, identity, device, heartbeat, Optuna studies."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import optuna
from optuna.storages import RDBStorage

from storage.db import Database, bound_idle_transactions
from storage.optimizers import build_pruner, build_sampler
from storage.optuna_asks import load_worker_study
from storage.optuna_store import open_optuna_storage
from storage.pools import SLOT_OPTUNA, SLOT_SERVICE
from storage.settings import Settings
from storage.spec import StudySpec
from workers.heartbeat import Heartbeat
from workers.interrupt import Interrupter
from workers.retry import call_with_retries

if TYPE_CHECKING:
    from storage.budget import Claim, ClaimRequest
    from workers.context import TrialContext
    from workers.outcome import TrialResult

logger = logging.getLogger(__name__)
T = TypeVar("T")
# How long a worker keeps retrying to record a finished trial while a database is down.
SETTLE_RETRY_S = 3600.0


@dataclass(frozen=True)
class FinishedTrial:
    """A trial that ended on this slot, as the after-trial hooks see it."""

    claim: Claim
    spec: StudySpec
    trial: optuna.Trial
    ctx: TrialContext
    result: TrialResult


@dataclass(frozen=True)
class SlotOptions:
    device: str  # the torch device the task uses: "cpu" or "cuda"
    device_label: str  # what users see: "cpu" or "cuda:<physical index>"
    slot: int
    studies: list[str] = field(default_factory=list)
    max_trials: int | None = None
    exit_when_idle: bool = False
    wakeup_fd: int | None = None  # the supervisor's wake-up pipe (see workers/wakeup.py)
    # Packed slot (``--per-device auto``): what the device's trials may reserve together.
    memory_budget: int | None = None
    share_cores: bool = False  # a CPU slot that takes its share of the host's cores


def new_worker_id(device_label: str, slot: int) -> str:
    return f"{socket.gethostname()}:{device_label}:{slot}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class SlotEnv:
    """Shared state of one slot process (one trial at a time)."""

    def __init__(self, settings: Settings, options: SlotOptions) -> None:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.settings = settings
        self.options = options
        self.db = Database(
            settings.database_url, **SLOT_SERVICE.engine_kwargs(settings.database_url)
        )
        self.optuna_storage: RDBStorage = open_optuna_storage(
            settings.optuna_storage, pool=SLOT_OPTUNA
        )
        # A frozen slot must not hold row locks that the reaper waits on.
        for engine in (self.db.engine, self.optuna_storage.engine):
            bound_idle_transactions(engine, settings.heartbeat_grace_s)
        self.worker_id = new_worker_id(options.device_label, options.slot)
        self.interrupter = Interrupter()
        self.heartbeat = Heartbeat(
            self.db, self.worker_id, settings.heartbeat_interval_s, self.interrupter
        )
        self._studies: dict[int, optuna.Study] = {}
        self.context_hooks: list[Callable[[TrialContext, StudySpec, Claim], None]] = []
        self.trial_hooks: list[Callable[[FinishedTrial], None]] = []
        # Folders that must not be deleted yet (say, models still queued for MLflow).
        self.protected_dirs: list[Callable[[], set[Path]]] = []
        # All must say yes before the slot claims a trial (a packed device's room).
        self.claim_gates: list[Callable[[], bool]] = []
        self.closers: list[Callable[[], None]] = []
        # What the runner would claim next (None: no further trial); a trial's
        # settlement claims it in the same transaction and leaves it here.
        self.claim_request: Callable[[], ClaimRequest | None] | None = None
        self.next_claim: Claim | None = None

    def install_host_sharing(self) -> None:
        """Share the device with the other slots of this machine, as the options say."""
        if self.options.memory_budget is not None:
            from workers.packing import DevicePacking

            DevicePacking(self, self.options.memory_budget).install()
        if self.options.share_cores and self.device == "cpu":
            from workers.cpu_share import SlotCores

            SlotCores(self).install()

    def may_claim(self) -> bool:
        return all(gate() for gate in self.claim_gates)

    @property
    def device(self) -> str:
        return self.options.device

    @property
    def device_label(self) -> str:
        return self.options.device_label

    def study(self, claim: Claim, spec: StudySpec) -> optuna.Study:
        """The claim's Optuna study, loaded once, with sampler and pruner rebuilt from the spec.

        The sampler is kept for the life of the process: samplers cache what
        they learned from past trials, and rebuilding one per trial would make
        each trial cost more as the study grows. Its seed stream is the claim
        that first loaded the study here, so that concurrent workers do not
        propose the same trials and a single worker's study is reproducible.
        Keyed by Optuna's id: a deleted study may come back under its name.
        """
        key = claim.optuna_study_id
        if key not in self._studies:
            self._studies[key] = load_worker_study(
                claim.study_name,
                self.optuna_storage,
                build_sampler(spec, stream=claim.claim_number),
                build_pruner(spec.effective_pruner, spec.budget.n_trials),
            )
        return self._studies[key]

    def retrying(self, call: Callable[[], T]) -> T:
        """Run database work, retrying with backoff while a database is down."""
        return call_with_retries(call, SETTLE_RETRY_S, "worker")

    def prepare_context(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        for hook in self.context_hooks:
            hook(ctx, spec, claim)

    def after_trial(self, finished: FinishedTrial) -> None:
        """Run every after-trial hook; one that fails is logged and the others still run."""
        for hook in self.trial_hooks:
            try:
                hook(finished)
            except Exception:
                logger.exception("after-trial step failed for trial %d", finished.trial.number)

    def close(self) -> None:
        for close in self.closers:
            try:
                close()
            except Exception:
                logger.exception("could not leave this machine's shared state")
        self.heartbeat.stop()
        self.db.dispose()
        self.optuna_storage.engine.dispose()
