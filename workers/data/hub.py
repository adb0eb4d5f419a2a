"""Datasets from the Hugging Face hub, through the optional ``datasets`` package.

``datasets`` is imported only here and only when a spec asks for a hub
dataset: workers on machines without internet never need it.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

from storage.tasks.text import HubTextDataset
from workers.data.files import RawSplit
from workers.errors import DatasetError

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

    Raises:
        DatasetError: ``datasets`` is missing, the hub cannot be reached, the
            dataset or split does not exist, or a column is missing.
    """
    try:
        datasets = importlib.import_module("datasets")
    except ImportError:
        raise DatasetError(f"cannot load {spec.name!r}: {_NEEDS}") from None
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


def _load_split(datasets: Any, spec: HubTextDataset, split: str) -> Any:
    try:
        return datasets.load_dataset(spec.name, spec.subset, split=split, revision=spec.revision)
    except Exception as exc:
        # Offline, unknown name, unknown split: the library raises many types.
        raise DatasetError(
            f"could not load split {split!r} of {spec.name!r} from the hub "
            f"({type(exc).__name__}: {exc}); {_NEEDS}"
        ) from None


def _to_raw(dataset: Any, spec: HubTextDataset, label_column: str | None) -> RawSplit:
    columns = list(dataset.column_names)
    wanted = [spec.text_column] + ([label_column] if label_column is not None else [])
    missing = [column for column in wanted if column not in columns]
    if missing:
        raise DatasetError(
            f"{spec.name}: column(s) {', '.join(map(repr, missing))} not found; "
            f"the columns are: {', '.join(map(repr, columns))}"
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
