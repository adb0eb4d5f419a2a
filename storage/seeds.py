"""Seeds: one per sampler stream, and one per trial.

A trial's seed is derived from the study's sampler seed and the trial's
number, so nothing needs writing for it; it is recorded on the trial
(``hpo.seed``) only where it cannot be derived: a study without a seed (a
random one) and a trial that must repeat another's (a retry, a continuation).
"""

from __future__ import annotations

import random
import zlib

import optuna
from optuna.trial import FrozenTrial

from storage.optuna_store import ATTR_SEED


def stream_seed(seed: int | None, stream: int) -> int | None:
    """A seed for one worker's stream, derived from the study seed.

    Workers that shared one seed would propose the same random trials at once.
    """
    if seed is None:
        return None
    return zlib.crc32(f"{seed}:{stream}".encode()) & 0x7FFFFFFF


def trial_seed(trial: FrozenTrial | optuna.Trial, base: int | None) -> int | None:
    """The seed ``trial`` runs with: the recorded one, else the one its number derives.

    None only for a trial of an unseeded study that has none recorded (asked
    before seeds were recorded at creation).
    """
    recorded = trial.user_attrs.get(ATTR_SEED)
    if recorded is not None:
        return int(recorded)
    return stream_seed(base, trial.number)


def new_trial_seed_attrs(base: int | None) -> dict[str, int]:
    """What a new trial must record of its seed: nothing when the study seed derives it."""
    return {} if base is not None else {ATTR_SEED: random.randrange(2**31)}
