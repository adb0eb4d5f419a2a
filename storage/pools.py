"""How many database connections a worker process may hold, and why that many.

Every connection a worker holds is a Postgres backend (or a PgBouncer client),
so a fleet's connection count is these figures times the number of slots:

| process | service database | Optuna storage | LISTEN |
|---|---|---|---|
| a slot (one per GPU slot) | at most 3, 1 kept while idle | at most 2, 1 kept | none |
| the supervisor (one per ``hpo worker``) | at most 2, 1 kept | at most 2, 1 kept | 1 |

A slot's service-database users are its main loop, its heartbeat thread and
its MLflow sender thread, each holding one connection at a time: three
connections are enough and more would never be used. Optuna's storage is
used by the trial loop alone; the second connection only absorbs the rare
overlap of an Optuna call made from a hook. The supervisor reaps (main
thread) and sends study summaries (one thread). Connections beyond the kept
one are closed when returned, so an idle fleet holds the smaller figure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from storage.db import is_sqlite

# A thread that finds every connection taken waits this long, then fails
# loudly: it would mean the figures above are wrong.
POOL_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class PoolLimits:
    """``size`` connections kept open, ``overflow`` more for bursts."""

    size: int
    overflow: int

    @property
    def most(self) -> int:
        """The most connections the pool ever holds at once."""
        return self.size + self.overflow

    def engine_kwargs(self, url: str) -> dict[str, Any]:
        """``create_engine`` arguments for ``url`` (SQLite keeps its own pooling)."""
        if is_sqlite(url):
            return {}
        return {
            "pool_size": self.size,
            "max_overflow": self.overflow,
            "pool_timeout": POOL_TIMEOUT_S,
        }


SLOT_SERVICE = PoolLimits(size=1, overflow=2)
SLOT_OPTUNA = PoolLimits(size=1, overflow=1)
SUPERVISOR_SERVICE = PoolLimits(size=1, overflow=1)
SUPERVISOR_OPTUNA = PoolLimits(size=1, overflow=1)
# A study's MLflow summary reads Optuna once per study. Two, not one: opening
# an Optuna storage checks its schema while holding a connection already.
SUMMARY_OPTUNA = PoolLimits(size=1, overflow=1)
# The supervisor's one LISTEN connection, shared by its slots through pipes.
SUPERVISOR_LISTEN = 1


def worker_connections(slots: int, supervisors: int) -> int:
    """The most server connections ``supervisors`` ``hpo worker`` processes with
    ``slots`` slots in all can hold straight to Postgres (without PgBouncer)."""
    per_slot = SLOT_SERVICE.most + SLOT_OPTUNA.most
    per_supervisor = SUPERVISOR_SERVICE.most + SUPERVISOR_OPTUNA.most + SUPERVISOR_LISTEN
    return slots * per_slot + supervisors * per_supervisor
