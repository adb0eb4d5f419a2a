"""Checkpoints that let a retried trial resume where the last one stopped.

A checkpoint is a folder: ``state.pt`` (model, optimizer, scheduler and
torch RNG states; loadable with ``weights_only=True``) and
``trainer_state.json`` (position, run fingerprint, Python and NumPy RNG
states). It is written to a temporary folder and renamed into place; the
previous checkpoint is moved aside first and removed last, so a crash at
any moment leaves one complete checkpoint (``checkpoint`` or, between the
two renames, ``checkpoint.old``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import random
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

_STATE = "state.pt"
_META = "trainer_state.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Position:
    """How far a run got: optimizer steps done, and where in which epoch."""

    step: int
    epoch: int
    step_in_epoch: int


def save_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    position: Position,
    fingerprint: str,
) -> None:
    """Write a checkpoint at ``directory``, replacing the previous one atomically."""
    tensors = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    meta = {
        "format": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "position": asdict(position),
        "python_rng": _python_rng_state(),
        "numpy_rng": _numpy_rng_state(),
    }

    def write(folder: Path) -> None:
        torch.save(tensors, folder / _STATE)
        (folder / _META).write_text(json.dumps(meta))

    replace_directory(directory, write)
    logger.info("checkpoint at step %d", position.step)


def load_checkpoint(
    directory: Path,
    *,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    fingerprint: str,
) -> Position | None:
    """Restore the checkpoint at ``directory`` into the given objects.

    Returns its position, or None when there is none, it belongs to another
    run (other params or config), or it cannot be read: the run then starts
    from scratch, which is always correct, only slower.
    """
    found = _existing(directory)
    if found is None:
        return None
    try:
        meta = json.loads((found / _META).read_text())
        if meta.get("format") != FORMAT_VERSION or meta.get("fingerprint") != fingerprint:
            logger.warning("ignoring checkpoint %s: it belongs to another run", found)
            return None
        tensors = torch.load(found / _STATE, map_location="cpu", weights_only=True)
        if not _same_shapes(tensors["model"], model.state_dict()):
            raise ValueError("the model's parameters differ")
        # The optimizer checks its groups before changing anything, so a
        # mismatch leaves the fresh run untouched.
        optimizer.load_state_dict(tensors["optimizer"])
        scheduler.load_state_dict(tensors["scheduler"])
        model.load_state_dict(tensors["model"])
    except (OSError, ValueError, KeyError, RuntimeError, pickle.UnpicklingError) as exc:
        logger.warning("ignoring unreadable checkpoint %s: %s", found, exc)
        return None
    _restore_rng(tensors, meta)
    position = Position(**meta["position"])
    logger.info("resuming from the checkpoint at step %d", position.step)
    return position


def remove_checkpoint(directory: Path) -> None:
    """Delete the checkpoint (and a leftover from an interrupted write)."""
    for folder in (directory, _aside(directory)):
        shutil.rmtree(folder, ignore_errors=True)
    for leftover in directory.parent.glob(f"{directory.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def replace_directory(target: Path, write: Callable[[Path], None]) -> None:
    """Fill a fresh folder with ``write`` and swap it in for ``target``.

    Readers see either the old complete folder or the new complete one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    try:
        write(temporary)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    aside = _aside(target)
    shutil.rmtree(aside, ignore_errors=True)
    if target.exists():
        target.rename(aside)
    temporary.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def _same_shapes(saved: dict[str, torch.Tensor], current: dict[str, torch.Tensor]) -> bool:
    return saved.keys() == current.keys() and all(
        saved[name].shape == tensor.shape for name, tensor in current.items()
    )


def _existing(directory: Path) -> Path | None:
    for folder in (directory, _aside(directory)):
        if (folder / _META).is_file() and (folder / _STATE).is_file():
            return folder
    return None


def _aside(directory: Path) -> Path:
    return directory.with_name(f"{directory.name}.old")


def _python_rng_state() -> list[Any]:
    version, state, gauss = random.getstate()
    return [version, list(state), gauss]


def _numpy_rng_state() -> list[Any]:
    name, keys, position, has_gauss, gauss = np.random.get_state(legacy=True)
    return [name, [int(k) for k in keys], int(position), int(has_gauss), float(gauss)]


def _restore_rng(tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    version, state, gauss = meta["python_rng"]
    random.setstate((version, tuple(state), gauss))
    name, keys, position, has_gauss, cached = meta["numpy_rng"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
    torch.set_rng_state(tensors["torch_rng"])
    cuda_states = tensors.get("cuda_rng") or []
    # A retry may land on a machine with fewer (or no) GPUs: restore what fits.
    if torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda_states)
