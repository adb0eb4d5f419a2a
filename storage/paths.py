"""Confinement of user-given paths to the folders the operator allows."""

from __future__ import annotations

import re
from pathlib import Path

from storage.errors import ErrorDetail, quote

# A hub repository id, as the hub itself allows them: ``name`` or ``org/name``.
_HUB_ID = re.compile(r"\A[A-Za-z0-9][\w.\-]{0,95}(/[A-Za-z0-9][\w.\-]{0,95})?\Z", re.ASCII)
# Names that ``datasets.load_dataset`` treats as a builder for local files (it
# then reads the worker's working directory), not as a hub repository.
LOCAL_BUILDERS = frozenset(
    {
        "arrow", "audiofolder", "cache", "conll", "csv", "eval", "fasta", "fastq",
        "folder_based_builder", "genbank", "generator", "harbor", "hdf5", "iceberg",
        "imagefolder", "json", "lance", "meshfolder", "mmcif", "niftifolder", "pandas",
        "parquet", "pdb", "pdffolder", "spark", "sql", "text", "tsfile", "videofolder",
        "vortex", "webdataset", "xml",
    }
)  # fmt: skip


class PathNotAllowedError(ValueError):
    """A path points outside every allowed root, or does not exist."""


def looks_like_path(value: str) -> bool:
    """True for a local path rather than a hub id (``org/name``)."""
    return value.startswith((".", "/", "~")) or "\\" in value or Path(value).exists()


def hub_id_problem(name: str) -> str | None:
    """Why ``name`` cannot be a hub dataset id (None when it can).

    Only the form is checked; whether a folder of that name exists is checked
    where the name would be read (:func:`looks_like_path`).
    """
    if not _HUB_ID.match(name) or ".." in name or "--" in name or name.endswith(".git"):
        return (
            "not a hub dataset id (name or org/name); local files are read with "
            "source: csv, jsonl, parquet or text and a path below HPO_DATASET_ROOTS"
        )
    if name.lower() in LOCAL_BUILDERS:
        return (
            f"{name!r} names a builder for local files, not a hub dataset; use "
            "source: csv, jsonl, parquet or text with a path below HPO_DATASET_ROOTS"
        )
    return None


def resolve_confined(path: str, roots: list[Path], *, must_exist: bool) -> Path:
    """Resolve ``path`` (relative to the working directory) inside one of ``roots``.

    Symlinks are resolved first, so a link that leads out of the roots is refused.

    Raises:
        PathNotAllowedError: outside the roots, or missing when ``must_exist``.
    """
    resolved = Path(path).expanduser().resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ":".join(str(r) for r in roots)
        raise PathNotAllowedError(
            f"{quote(path)} is outside the allowed dataset roots ({allowed}); "
            "move the data below one of them or extend HPO_DATASET_ROOTS"
        )
    if must_exist and not resolved.exists():
        raise PathNotAllowedError(f"{quote(path)} does not exist")
    return resolved


def check_confined(path: str, roots: list[Path], loc: tuple[str | int, ...]) -> list[ErrorDetail]:
    try:
        resolve_confined(path, roots, must_exist=False)
    except PathNotAllowedError as exc:
        return [ErrorDetail(loc, str(exc))]
    return []


def trial_folder(trials_dir: Path, study_name: str, root: int) -> Path:
    """The folder of trial ``root`` of a study (``<trials_dir>/<study>/trial-NNNNN``).

    ``root`` is the trial whose folder it is: retries and continuations work in
    their first trial's folder (see ``storage.optuna_store.folder_root``).
    """
    return trials_dir / study_name / trial_folder_name(root)


def trial_folder_name(root: int) -> str:
    return f"trial-{root:05d}"
