"""Memory-aware packing of trials on a device (``hpo worker --per-device auto``).

The supervisor measures a device's free memory once, at start-up, through
:func:`probe_free_bytes` (``HPO_DEVICE_MEMORY_GIB`` declares it instead), and
starts :func:`auto_slot_count` slots on it, each told the device's memory
budget. Slots claim trials as usual; admission happens in the trial itself:
the training loop estimates the trial's peak memory from its model, batch
size and sequence length and calls ``ctx.reserve_device_memory``, which
waits until the device's :class:`MemoryLedger` has room. The ledger is a
host-local file shared by every slot on the device (of every ``hpo worker``
on the machine), so admissions never add up past the budget. After the first
optimizer step on CUDA the reservation grows to the measured peak if that is
higher. A trial is never refused: one larger than the whole budget waits
until the device is empty and then runs alone; if it does not fit after all,
the CUDA out-of-memory error fails it with reason ``oom`` and no retry, as on
any slot.

While a claimed trial waits, a slot with a waiting trial on the device keeps
the other idle slots of that device from claiming (:meth:`MemoryLedger.may_claim`),
so other machines can take the study's remaining trials meanwhile.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from storage.optuna_store import ATTR_DEVICE_MEMORY
from storage.settings import Settings
from workers.host_state import host_state_dir, locked_entries

if TYPE_CHECKING:
    from storage.budget import Claim
    from storage.spec import StudySpec
    from workers.context import TrialContext
    from workers.slot_env import FinishedTrial, SlotEnv

logger = logging.getLogger(__name__)
GIB = 2**30
MIB = 2**20
# Slots started per device by ``--per-device auto``; memory decides how many train at once.
AUTO_MAX_SLOTS = 8
# What each slot process holds on a GPU outside any trial: the CUDA context and cuBLAS workspaces.
CUDA_CONTEXT_BYTES = 640 * MIB
# Part of the measured free memory left alone: other processes and fragmentation.
HEADROOM = 0.05
POLL_S = 0.2


def probe_free_bytes(torch_device: str, visible: str, declared_gib: float | None) -> int:
    """Free memory of a device: declared (``HPO_DEVICE_MEMORY_GIB``), else measured.

    A GPU is measured in a short child process with only that GPU visible, so
    that the supervisor itself never holds a CUDA context; the CPU "device"
    offers the host's available memory.
    """
    if declared_gib is not None:
        return int(declared_gib * GIB)
    if torch_device == "cuda":
        probe = "import torch; print(torch.cuda.mem_get_info()[0])"
        env = {**os.environ, "CUDA_VISIBLE_DEVICES": visible}
        out = subprocess.run(
            [sys.executable, "-c", probe],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if out.returncode != 0:
            raise RuntimeError(f"cannot measure the memory of GPU {visible}: {out.stderr[-500:]}")
        return int(out.stdout.strip().splitlines()[-1])
    return available_host_bytes()


def available_host_bytes() -> int:
    """``MemAvailable`` of /proc/meminfo (Linux), else free physical pages."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_slot_count(torch_device: str, free_bytes: int) -> int:
    """Slots ``--per-device auto`` starts: up to 8 per GPU (each holds a CUDA context,
    so never more than half the memory goes to contexts), one per core up to 8 on the CPU."""
    if torch_device == "cuda":
        return max(1, min(AUTO_MAX_SLOTS, int(free_bytes // (2 * CUDA_CONTEXT_BYTES))))
    return max(1, min(AUTO_MAX_SLOTS, len(os.sched_getaffinity(0))))


def packing_budget(torch_device: str, free_bytes: int, slots: int) -> int:
    """What the trials of ``slots`` slots may reserve together on the device."""
    usable = int(free_bytes * (1 - HEADROOM))
    if torch_device == "cuda":
        usable -= slots * CUDA_CONTEXT_BYTES
    return max(usable, 1)


def ledger_path(settings: Settings, device_label: str) -> Path:
    return host_state_dir(settings) / f"memory-{re.sub(r'[^A-Za-z0-9]+', '-', device_label)}.json"


class MemoryLedger:
    """Reservations of one device's memory by the trials of every slot on the machine.

    Entries (by slot pid): ``{"bytes", "state": "reserved" | "waiting", "since"}``.
    """

    def __init__(self, path: Path, budget: int, owner: int | None = None) -> None:
        self.path = path
        self.budget = budget
        self.owner = str(os.getpid() if owner is None else owner)
        self.holding = False

    def reserve(self, nbytes: int, poll_s: float = POLL_S) -> float:
        """Wait until ``nbytes`` fit next to the other reservations; return the seconds waited.

        Waiting trials are admitted oldest first: a newer one goes ahead only
        if it fits next to what the oldest waiter needs. One that needs more
        than the whole budget is admitted once nothing else is reserved. A
        reservation already held only grows (it never waits). An exception
        while waiting (the trial interrupted) withdraws the request.
        """
        if self.holding:
            self._grow(nbytes)
            return 0.0
        started, waited = time.monotonic(), False
        try:
            while not self._try_admit(nbytes):
                waited = True
                time.sleep(poll_s)
        except BaseException:
            self.release()
            raise
        self.holding = True
        return time.monotonic() - started if waited else 0.0

    def _try_admit(self, nbytes: int) -> bool:
        with locked_entries(self.path) as entries:
            mine = entries.get(self.owner) or {"since": time.time()}
            others = {pid: e for pid, e in entries.items() if pid != self.owner}
            reserved = sum(e["bytes"] for e in others.values() if e["state"] == "reserved")
            older = [
                e for e in others.values() if e["state"] == "waiting" and e["since"] < mine["since"]
            ]
            ahead = min(older, key=lambda e: e["since"])["bytes"] if older else 0
            admitted = (reserved + nbytes + ahead <= self.budget) or (reserved == 0 and not older)
            state = "reserved" if admitted else "waiting"
            entries[self.owner] = {"bytes": int(nbytes), "state": state, "since": mine["since"]}
        return admitted

    def _grow(self, nbytes: int) -> None:
        with locked_entries(self.path) as entries:
            entry = entries.get(self.owner)
            if entry is not None and nbytes > entry["bytes"]:
                entry["bytes"] = int(nbytes)

    def release(self) -> None:
        """Drop this slot's reservation or request (nothing if it holds none)."""
        with locked_entries(self.path) as entries:
            entries.pop(self.owner, None)
        self.holding = False

    def may_claim(self) -> bool:
        """No trial waits for this device and some of its budget is left."""
        with locked_entries(self.path) as entries:
            others = [e for pid, e in entries.items() if pid != self.owner]
        if any(e["state"] == "waiting" for e in others):
            return False
        return bool(sum(e["bytes"] for e in others) < self.budget)

    def reserved_bytes(self) -> int:
        """What every slot on the device holds now."""
        with locked_entries(self.path) as entries:
            return sum(e["bytes"] for e in entries.values() if e["state"] == "reserved")


class DevicePacking:
    """A packed slot's part: trials reserve device memory before they load their model."""

    def __init__(self, env: SlotEnv, budget: int) -> None:
        self.env = env
        self.ledger = MemoryLedger(ledger_path(env.settings, env.device_label), budget)

    def install(self) -> None:
        self.env.context_hooks.append(self._prepare)
        self.env.trial_hooks.append(self._after_trial)
        self.env.claim_gates.append(self.ledger.may_claim)
        self.env.closers.append(self.ledger.release)

    def _prepare(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        if self.ledger.holding:
            self.ledger.release()  # left over by a trial whose end went wrong
        ctx.reserve_device_memory = functools.partial(self._reserve, ctx)

    def _reserve(self, ctx: TrialContext, nbytes: int) -> None:
        first = not self.ledger.holding
        waited = self.ledger.reserve(nbytes)
        if not first:
            return
        facts: dict[str, Any] = {
            "estimate_mib": round(nbytes / MIB, 1),
            "waited_s": round(waited, 3),
            "admitted_at": datetime.now(UTC).isoformat(),
            "budget_mib": round(self.ledger.budget / MIB, 1),
        }
        ctx.log.info(
            "admitted on %s: %.0f MiB of %.0f MiB (waited %.1f s)",
            self.env.device_label,
            facts["estimate_mib"],
            facts["budget_mib"],
            waited,
        )
        ctx.set_info(memory_estimate_mib=facts["estimate_mib"], memory_wait_s=facts["waited_s"])
        with ctx.critical():
            ctx.db_call(lambda: ctx.trial.set_user_attr(ATTR_DEVICE_MEMORY, facts))

    def _after_trial(self, finished: FinishedTrial) -> None:
        # The trial's tensors are unreachable now; give their memory back to the
        # device before the next trial on it is admitted.
        gc.collect()
        if "torch" in sys.modules:
            from workers.training.runtime import release_device_memory

            release_device_memory()
        self.ledger.release()
