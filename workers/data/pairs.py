"""Source/target pairs for ``seq2seq``: the builtin translation set, local tables, hub data."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from storage.tasks.seq2seq import BuiltinPairDataset, FilePairDataset, HubPairDataset
from storage.tasks.text import HubTextDataset
from workers.data import translation
from workers.data.files import RawSplit, file_digest, read_table_split, resolve_dataset_path
from workers.data.hub import load_hub_splits
from workers.data.loading import fingerprint_of
from workers.errors import DatasetError

PairSpec = BuiltinPairDataset | FilePairDataset | HubPairDataset


@dataclass(frozen=True)
class PairData:
    """Aligned sources and targets; ``fingerprint`` as in :class:`TextData`."""

    train_sources: list[str]
    train_targets: list[str]
    validation_sources: list[str]
    validation_targets: list[str]
    fingerprint: str

    @property
    def tokenizer_corpus(self) -> list[str]:
        """Both sides of the training pairs: one vocabulary serves encoder and decoder."""
        return self.train_sources + self.train_targets


def load_pair_data(spec: PairSpec, roots: list[Path]) -> PairData:
    """Load, split and check the pairs that ``spec`` describes.

    Raises:
        DatasetError: the data cannot be used; the message says why and how
            to fix the spec (paths outside ``roots`` included).
    """
    train, validation, identity = _read_source(spec, roots)
    if validation is None:
        # The builtin set always has its own validation stream.
        fraction = getattr(spec, "validation_fraction", 0.1)
        train, validation = split_pairs(train, fraction)
    return PairData(
        train.texts,
        [str(target) for target in train.labels or []],
        validation.texts,
        [str(target) for target in validation.labels or []],
        fingerprint_of(spec, identity),
    )


def split_pairs(split: RawSplit, fraction: float, *, seed: int = 0) -> tuple[RawSplit, RawSplit]:
    """Hold out ``fraction`` of the pairs (at least one), the same rows for every trial.

    Raises:
        DatasetError: fewer than two pairs.
    """
    count = len(split.texts)
    if count < 2:
        raise DatasetError(f"{count} pair(s) cannot be split into training and validation")
    rows = list(range(count))
    random.Random(seed).shuffle(rows)
    held_out = set(rows[: min(count - 1, max(1, round(fraction * count)))])
    labels = split.labels or []

    def subset(keep: bool) -> RawSplit:
        chosen = [i for i in range(count) if (i in held_out) != keep]
        return RawSplit([split.texts[i] for i in chosen], [labels[i] for i in chosen])

    return subset(True), subset(False)


def _read_source(spec: PairSpec, roots: list[Path]) -> tuple[RawSplit, RawSplit | None, str]:
    if isinstance(spec, BuiltinPairDataset):
        splits = [
            RawSplit(*translation.generate_pairs(n, seed=spec.seed, stream=stream))
            for n, stream in ((spec.n_train, "train"), (spec.n_validation, "validation"))
        ]
        return splits[0], splits[1], f"translation-generator-v{translation.GENERATOR_VERSION}"
    if isinstance(spec, HubPairDataset):
        # The hub loader reads a text and a label column: here, source and target.
        as_text = HubTextDataset.model_construct(
            **spec.model_dump(exclude={"source_column", "target_column"}),
            text_column=spec.source_column,
            label_column=spec.target_column,
        )
        return load_hub_splits(as_text, with_labels=True)
    paths = [resolve_dataset_path(spec.path, roots)]
    if spec.validation_path is not None:
        paths.append(resolve_dataset_path(spec.validation_path, roots))
    columns = "source_column / target_column"
    splits = [
        _checked(
            read_table_split(
                path, spec.source, spec.source_column, spec.target_column, column_fields=columns
            ),
            path,
        )
        for path in paths
    ]
    identity = json.dumps([file_digest(path) for path in paths])
    return splits[0], splits[1] if len(splits) > 1 else None, identity


def _checked(split: RawSplit, path: Path) -> RawSplit:
    keep = [i for i, target in enumerate(split.labels or []) if str(target).strip()]
    if not keep:
        raise DatasetError(f"{path.name}: no row has a non-empty target")
    labels = split.labels or []
    return RawSplit([split.texts[i] for i in keep], [labels[i] for i in keep])
