"""CPU slots of every ``hpo worker`` on a machine share its cores.

Each CPU slot registers in a host-local registry (see :mod:`workers.host_state`)
and, before each trial, sets torch's thread count to its share of the cores:
``cores // live CPU slots`` (at least one). Two workers started side by side
on one machine thus split the cores between their slots instead of each
giving every slot all of them. The share is taken when a trial starts: a
slot that joins later changes the threads of the others' next trials.
An explicit ``OMP_NUM_THREADS`` for ``hpo worker`` turns this off.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from workers.host_state import host_state_dir, locked_entries

if TYPE_CHECKING:
    from storage.budget import Claim
    from storage.spec import StudySpec
    from workers.context import TrialContext
    from workers.slot_env import SlotEnv

logger = logging.getLogger(__name__)
REGISTRY = "cpu-slots.json"
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def host_cores() -> int:
    """Cores this process may run on (its affinity, which containers narrow)."""
    return max(1, len(os.sched_getaffinity(0)))


class CpuShare:
    """One CPU slot's entry in the host's registry, and its share of the cores."""

    def __init__(self, registry: Path, owner: int | None = None) -> None:
        self.registry = registry
        self.owner = str(os.getpid() if owner is None else owner)

    def join(self) -> None:
        with locked_entries(self.registry) as entries:
            entries[self.owner] = {"slot": True}

    def leave(self) -> None:
        with locked_entries(self.registry) as entries:
            entries.pop(self.owner, None)

    def live_slots(self) -> int:
        with locked_entries(self.registry) as entries:
            return max(1, len(entries))

    def threads(self) -> int:
        """This slot's share of the cores now."""
        return max(1, host_cores() // self.live_slots())

    def apply(self) -> int:
        """Give the next trial :meth:`threads` threads; return the count.

        Before torch is first imported the thread variables decide (the slot
        does not import torch itself: a trial's lease is not kept alive yet
        while this runs, and tasks without torch should not pay for it).
        """
        count = self.threads()
        torch = sys.modules.get("torch")
        if torch is None:
            for name in THREAD_VARIABLES:
                os.environ[name] = str(count)
        elif torch.get_num_threads() != count:
            torch.set_num_threads(count)
        return count


class SlotCores:
    """A CPU slot's part: join the registry at start, take the share before each trial."""

    def __init__(self, env: SlotEnv) -> None:
        self.env = env
        self.share = CpuShare(host_state_dir(env.settings) / REGISTRY)

    def install(self) -> None:
        self.share.join()
        self.env.context_hooks.append(self._prepare)
        self.env.closers.append(self.share.leave)

    def _prepare(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        threads = self.share.apply()
        ctx.set_info(cpu_threads=threads)
        ctx.log.debug("%d CPU thread(s) for this trial", threads)
