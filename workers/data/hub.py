"""Datasets from the Hugging Face hub, through the optional ``datasets`` package.

``datasets`` is imported only here and only when a spec asks for a hub
dataset: workers on machines without internet never need it.
"""

from __future__ import annotations

import importlib
import json
import logging
from typing import Any

from storage.paths import hub_id_problem, looks_like_path
from storage.tasks.text import HubTextDataset
from workers.data.files import RawSplit
from workers.errors import DatasetError

logger = logging.getLogger(__name__)

_NEEDS = (
    "hub datasets need the `datasets` package (pip install datasets) and internet "
    "access on the worker; on an offline machine export the data to a csv/jsonl/parquet "
    "file below HPO_DATASET_ROOTS instead"
)


def load_hub_splits(
    spec: HubTextDataset, *, with_labels: bool
) -> tuple[RawSplit, RawSplit | None, str]:
    """The training split, the validation split (if the spec names one) and
    a string that identifies the data's version (for the fingerprint).

    Messages never quote the data (column names, labels, the library's own
    messages): they end up in the trial's ``error``, which read tokens see.

    Raises:
        DatasetError: the name is not a hub id (a local folder on this worker
            included), ``datasets`` is missing, the hub cannot be reached, the
            dataset or split does not exist, or a column is missing.
    """
    check_hub_name(spec.name)
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DatasetError(f"cannot load {spec.name!r}: {_NEEDS}") from None
    _refuse_local_builders(datasets, spec.name)
    label_column = spec.label_column if with_labels else None
    train = _load_split(datasets, spec, spec.split)
    train_split = _to_raw(train, spec, label_column)
    validation_split = None
    versions = [str(getattr(train, "_fingerprint", ""))]
    if spec.validation_split is not None:
        validation = _load_split(datasets, spec, spec.validation_split)
        validation_split = _to_raw(validation, spec, label_column)
        versions.append(str(getattr(validation, "_fingerprint", "")))
    return train_split, validation_split, json.dumps(versions)


def check_hub_name(name: str) -> None:
    """Refuse names that ``datasets`` would read from this machine's disk.

    The API checked the same on its own machine; a folder of that name may
    exist only here (relative to this worker's working directory).

    Raises:
        DatasetError: not a hub id, or a local path on this worker.
    """
    problem = hub_id_problem(name)
    if problem is None and looks_like_path(name):
        problem = "a local folder on this worker, not a hub dataset id"
    if problem is not None:
        raise DatasetError(f"dataset.name {name!r} refused: {problem}")


def _refuse_local_builders(datasets: Any, name: str) -> None:
    # The installed version's own list: builders added after ours are refused too.
    modules = getattr(datasets, "packaged_modules", None)
    packaged = getattr(modules, "_PACKAGED_DATASETS_MODULES", {})
    if name.lower() in {str(key).lower() for key in packaged}:
        raise DatasetError(
            f"dataset.name {name!r} refused: it names a builder for local files, not a hub dataset"
        )


def _load_split(datasets: Any, spec: HubTextDataset, split: str) -> Any:
    try:
        return datasets.load_dataset(
            spec.name, spec.subset, split=split, revision=spec.revision, trust_remote_code=False
        )
    except Exception as exc:
        # Offline, unknown name, unknown split: the library raises many types. Its
        # messages may quote the data, so only the type is shown; the log has the rest.
        logger.warning("loading split %r of %r failed", split, spec.name, exc_info=True)
        raise DatasetError(
            f"could not load split {split!r} of {spec.name!r} from the hub "
            f"({type(exc).__name__}); {_NEEDS}"
        ) from None


def _to_raw(dataset: Any, spec: HubTextDataset, label_column: str | None) -> RawSplit:
    columns = list(dataset.column_names)
    wanted = [spec.text_column] + ([label_column] if label_column is not None else [])
    missing = [column for column in wanted if column not in columns]
    if missing:
        raise DatasetError(
            f"{spec.name}: column(s) {', '.join(map(repr, missing))} not found among its "
            f"{len(columns)} columns (set text_column / label_column)"
        )
    texts = [str(text) for text in dataset[spec.text_column]]
    if label_column is None:
        return RawSplit(texts, None)
    labels = list(dataset[label_column])
    # A ClassLabel column holds ids; its names are what the user knows.
    names = getattr(dataset.features[label_column], "names", None)
    if names:
        labels = [
            names[label] if isinstance(label, int) and label >= 0 else None for label in labels
        ]
    keep = [i for i, label in enumerate(labels) if label is not None]
    return RawSplit([texts[i] for i in keep], [labels[i] for i in keep])
