"""Trial folders on this machine: keep the best models, delete the rest.

Each trial writes checkpoints and its final model under
``HPO_DATA_DIR/trials/<study>/trial-NNNNN``. After every trial the folders of
finished trials outside the best ``HPO_KEEP_TOP_K_MODELS`` are deleted,
whether MLflow tracking is on or off. A study's folder records the id of the
study that owns it: a study deleted and submitted again under its name does
not resume from, or keep, the deleted study's files.
"""

from __future__ import annotations

import fcntl
import logging
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import optuna

from storage.budget import Claim, study_open
from storage.halving import is_paused
from storage.optuna_store import ATTR_FAIL_REASON, folder_root
from storage.paths import trial_folder_name
from storage.spec import StudySpec
from storage.states import FailReason
from workers.context import TrialContext
from workers.slot_env import FinishedTrial, SlotEnv

logger = logging.getLogger(__name__)
OWNER_FILE = ".study-id"


class TrialDirs:
    """Per-slot keeper of the study folders under ``HPO_DATA_DIR/trials``."""

    def __init__(self, env: SlotEnv) -> None:
        self.env = env
        self.owned: set[int] = set()  # study ids whose folder this process has checked

    def install(self) -> None:
        self.env.context_hooks.append(self.on_start)
        self.env.trial_hooks.append(self.on_end)

    def on_start(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        if claim.study_id in self.owned:
            return
        try:
            claim_study_dir(self.env.settings.trials_dir / spec.name, claim.study_id)
        except OSError as exc:  # the trial can still run; its folder is only not cleaned
            logger.warning("cannot check the trial folders of %s: %s", spec.name, exc)
        self.owned.add(claim.study_id)

    def on_end(self, finished: FinishedTrial) -> None:
        claim, spec = finished.claim, finished.spec
        keep: set[Path] = set()
        for protected in self.env.protected_dirs:
            keep |= protected()
        prune_trial_dirs(self.env, claim, spec, keep)


def claim_study_dir(root: Path, study_id: int) -> None:
    """Make ``root`` the folder of study ``study_id``; a deleted study's files are removed.

    A folder without an owner (written before owners were recorded) is kept.
    """
    root.mkdir(parents=True, exist_ok=True)
    owner_file = root / OWNER_FILE
    with _locked(root.parent / f".{root.name}.lock"):
        owner = owner_file.read_text().strip() if owner_file.is_file() else None
        if owner == str(study_id):
            return
        if owner is not None:
            for entry in root.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)
            logger.info("removed the trial folders of deleted study %s under %s", owner, root)
        owner_file.write_text(f"{study_id}\n")


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    # Slots of one machine share the folder; only one checks and cleans it at a time.
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def prune_trial_dirs(env: SlotEnv, claim: Claim, spec: StudySpec, keep: set[Path]) -> None:
    """Keep the model folders of the best ``keep_top_k_models`` trials; delete the rest.

    Folders of trials still running or waiting for a retry, of lost trials
    (their retry may be on the way), of paused trials while the study is open
    (resumable halving may continue them), and those holding a path in
    ``keep`` are kept. Studies with several
    objectives keep every folder (there is no single ranking).
    """
    root = env.settings.trials_dir / spec.name
    if not root.is_dir() or spec.is_multi_objective:
        return
    if not any(entry.is_dir() for entry in root.iterdir()):
        return  # no folder to judge (tasks that write none): spare the study's read
    trials = env.study(claim, spec).get_trials(deepcopy=False)
    direction = spec.objective_list[0].direction
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    done.sort(key=lambda t: t.values[0], reverse=direction == "maximize")
    best = {_folder(t) for t in done[: env.settings.keep_top_k_models]}
    groups: dict[str, list[optuna.trial.FrozenTrial]] = {}
    for t in trials:
        groups.setdefault(_folder(t), []).append(t)
    # A folder is shared by a trial and its retries: it is done with once all
    # of them are, and the last one was not lost (its retry may be on the way).
    open_study = env.retrying(lambda: _study_open(env, claim.study_id))
    finished = {
        name
        for name, group in groups.items()
        if all(t.state.is_finished() for t in group)
        and _done_with(max(group, key=lambda t: t.number), open_study)
    }
    protected = {p.resolve() for p in keep}
    for folder in root.iterdir():
        if (
            folder.is_dir()
            and folder.name in finished
            and folder.name not in best
            and not any(p.is_relative_to(folder.resolve()) for p in protected)
        ):
            shutil.rmtree(folder, ignore_errors=True)


def _done_with(latest: optuna.trial.FrozenTrial, open_study: bool) -> bool:
    """Whether a folder's last trial needs it no more: a lost trial's retry may be on
    the way, and a paused trial of an open study may be continued from its checkpoint."""
    if latest.user_attrs.get(ATTR_FAIL_REASON) == FailReason.LOST:
        return False
    return not (open_study and is_paused(latest))


def _study_open(env: SlotEnv, study_id: int) -> bool:
    with env.db.session_scope(read_only=True) as session:
        return study_open(session, study_id)


def _folder(trial: optuna.trial.FrozenTrial) -> str:
    return trial_folder_name(folder_root(trial))
