"""State shared by every ``hpo worker`` on one machine: small JSON files under a lock.

Device memory ledgers (:mod:`workers.packing`) and the CPU slot registry
(:mod:`workers.cpu_share`) live here. Entries are keyed by the process id of
the slot that wrote them; an entry whose process is gone (a killed slot) is
dropped by the next reader, so nothing needs cleaning up after a crash.
Processes must share a pid namespace (one container, or the host) for that.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from storage.settings import Settings


def host_state_dir(settings: Settings) -> Path:
    """``HPO_HOST_STATE_DIR``, else a per-user folder in the system's temp dir (created)."""
    folder = settings.host_state_dir or Path(tempfile.gettempdir()) / f"hpo-host-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def pid_alive(pid: int) -> bool:
    """True when a process with this id exists (ours or another user's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def locked_entries(path: Path) -> Iterator[dict[str, Any]]:
    """The live entries of ``path`` (pid -> value), for reading and changing under a lock.

    Changes made to the yielded dict are written back when the block ends
    without an error; entries of dead processes are dropped.
    """
    lock = path.with_name(path.name + ".lock")
    with lock.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            entries = {pid: v for pid, v in _read(path).items() if pid_alive(int(pid))}
            yield entries
            _write(path, entries)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(path: Path, entries: dict[str, Any]) -> None:
    # Written aside and renamed: a reader never sees half a file.
    scratch = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    scratch.write_text(json.dumps(entries, sort_keys=True))
    scratch.replace(path)
