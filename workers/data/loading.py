"""One entry point from a dataset spec to validated training and validation texts."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from storage.tasks.text import (
    BuiltinTextDataset,
    FileTextDataset,
    HubTextDataset,
    PlainTextDataset,
)
from workers.data import sentiment
from workers.data.files import (
    RawSplit,
    file_digest,
    read_table_split,
    read_text_split,
    resolve_dataset_path,
)
from workers.data.hub import load_hub_splits
from workers.data.labels import encode_labels, split_validation
from workers.errors import DatasetError

logger = logging.getLogger(__name__)

DatasetSpec = BuiltinTextDataset | FileTextDataset | PlainTextDataset | HubTextDataset


@dataclass(frozen=True)
class TextData:
    """Texts ready for a tokenizer; labels are ids into ``label_names``.

    ``fingerprint`` is a SHA-256 over the dataset spec and the data itself
    (file bytes, generator version, hub revision): equal fingerprints mean
    equal data, so tokenizers are cached by it and trials record it.
    """

    train_texts: list[str]
    validation_texts: list[str]
    train_labels: list[int] | None
    validation_labels: list[int] | None
    label_names: list[str] | None
    fingerprint: str

    @property
    def num_labels(self) -> int:
        return len(self.label_names) if self.label_names is not None else 0


def load_text_data(spec: DatasetSpec, roots: list[Path], *, with_labels: bool) -> TextData:
    """Load, split and check the dataset that ``spec`` describes.

    ``with_labels`` is True for classification; a corpus (masked-lm) reads
    only the texts, whatever the source.

    Raises:
        DatasetError: the data cannot be used; the message says why and how
            to fix the spec (paths outside ``roots`` included).
    """
    train, validation, identity = _read_source(spec, roots, with_labels=with_labels)
    if validation is None:
        train, validation = split_validation(train, _validation_fraction(spec))
    # Rows without a label are dropped only when labels are read: other texts.
    fingerprint = fingerprint_of(spec, f"{identity}|labels={with_labels}")
    if not with_labels:
        return TextData(train.texts, validation.texts, None, None, None, fingerprint)
    if train.labels is None or validation.labels is None:
        raise DatasetError("this task needs labels: set dataset.label_column")
    train_ids, validation_ids, names = encode_labels(train.labels, validation.labels)
    return TextData(train.texts, validation.texts, train_ids, validation_ids, names, fingerprint)


def _read_source(
    spec: DatasetSpec, roots: list[Path], *, with_labels: bool
) -> tuple[RawSplit, RawSplit | None, str]:
    """Training rows, validation rows if the source has them, and data identity."""
    if isinstance(spec, BuiltinTextDataset):
        return _builtin(spec, with_labels=with_labels)
    if isinstance(spec, HubTextDataset):
        return load_hub_splits(spec, with_labels=with_labels)
    paths = [resolve_dataset_path(spec.path, roots)]
    if spec.validation_path is not None:
        paths.append(resolve_dataset_path(spec.validation_path, roots))
    splits = [_read_file(spec, path, with_labels=with_labels) for path in paths]
    identity = json.dumps([file_digest(path) for path in paths])
    return splits[0], splits[1] if len(splits) > 1 else None, identity


def _read_file(
    spec: FileTextDataset | PlainTextDataset, path: Path, *, with_labels: bool
) -> RawSplit:
    if isinstance(spec, PlainTextDataset):
        if with_labels:
            raise DatasetError("a plain text file has no labels; use csv, jsonl or parquet")
        return read_text_split(path)
    label_column = spec.label_column if with_labels else None
    return read_table_split(path, spec.source, spec.text_column, label_column)


def _builtin(spec: BuiltinTextDataset, *, with_labels: bool) -> tuple[RawSplit, RawSplit, str]:
    def generate(n: int, stream: str) -> RawSplit:
        texts, labels = sentiment.generate_reviews(
            n, seed=spec.seed, stream=stream, label_noise=spec.label_noise
        )
        return RawSplit(texts, labels if with_labels else None)

    train = generate(spec.n_train, "train")
    validation = generate(spec.n_validation, "validation")
    if with_labels:
        # Readable names instead of "0"/"1": ids stay in sorted order of the raw labels.
        train = RawSplit(train.texts, [sentiment.LABEL_NAMES[y] for y in train.labels or []])
        validation = RawSplit(
            validation.texts, [sentiment.LABEL_NAMES[y] for y in validation.labels or []]
        )
    return train, validation, f"sentiment-generator-v{sentiment.GENERATOR_VERSION}"


def _validation_fraction(spec: DatasetSpec) -> float:
    return float(getattr(spec, "validation_fraction", 0.1))


def fingerprint_of(spec: BaseModel, identity: str) -> str:
    """SHA-256 over a dataset spec and a string that identifies its data."""
    digest = hashlib.sha256()
    digest.update(json.dumps(spec.model_dump(mode="json"), sort_keys=True).encode())
    digest.update(b"\0")
    digest.update(identity.encode())
    return digest.hexdigest()
