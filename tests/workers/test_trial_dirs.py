"""Trial folders: the best models are kept, tracking or not; a deleted study's are not reused."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest

from storage.db import Database
from storage.optuna_store import open_optuna_storage
from storage.settings import Settings
from storage.spec import StudySpec
from storage.studies import create_study
from tests.conftest import Fleet, make_settings
from workers.trial_dirs import OWNER_FILE, claim_study_dir


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls, mlflow_enabled=False)


@pytest.mark.slow
def test_only_the_top_k_model_folders_are_kept_without_mlflow(
    settings: Settings, fleet: Fleet
) -> None:
    spec = {
        "name": "kept",
        "task": {"name": "mlp-classifier", "config": {"max_epochs": 1}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 4, "max_concurrent_trials": 1},
    }
    storage = open_optuna_storage(settings.optuna_storage)
    db = Database(settings.database_url)
    with db.session_scope() as session:
        create_study(session, storage, StudySpec.model_validate(spec), "test")
    db.dispose()

    worker = fleet.start("--exit-when-idle", HPO_KEEP_TOP_K_MODELS="2")
    assert worker.wait(timeout=240) == 0, fleet.logs()[-4000:]

    study = optuna.load_study(study_name="kept", storage=storage)
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4
    top = sorted(complete, key=lambda t: t.values[0], reverse=True)[:2]
    root = settings.trials_dir / "kept"
    folders = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert folders == sorted(f"trial-{t.number:05d}" for t in top)
    assert all((root / name / "model" / "model.pt").is_file() for name in folders)
    storage.engine.dispose()


def test_a_deleted_studys_folders_are_removed_when_its_name_is_reused(tmp_path: Path) -> None:
    root = tmp_path / "trials" / "reused"
    (root / "trial-00000" / "checkpoint").mkdir(parents=True)
    claim_study_dir(root, 3)  # folders from before owners were recorded: kept
    assert (root / "trial-00000" / "checkpoint").is_dir()
    assert (root / OWNER_FILE).read_text().strip() == "3"

    claim_study_dir(root, 3)
    assert (root / "trial-00000").is_dir()
    claim_study_dir(root, 7)  # study 3 was deleted, a new one took its name
    assert [p.name for p in root.iterdir()] == [OWNER_FILE]
    assert (root / OWNER_FILE).read_text().strip() == "7"
