"""Label ids and the validation split of a labelled text set."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from workers.data.files import RawSplit
from workers.errors import DatasetError


def encode_labels(
    train: Sequence[Any], validation: Sequence[Any]
) -> tuple[list[int], list[int], list[str]]:
    """Map raw labels to ids in sorted order; return both id lists and the names.

    Integer labels (also integral floats such as ``1.0`` that pandas makes of a
    column with gaps) sort numerically, anything else as strings.

    Raises:
        DatasetError: fewer than two classes in training, or validation labels
            that training never shows (the model could never predict them).
    """
    train_keys = [_normalize(label) for label in train]
    validation_keys = [_normalize(label) for label in validation]
    if not all(isinstance(k, int) for k in train_keys + validation_keys):
        # Mixed kinds ("1" next to 1) must not become two classes.
        train_keys = [str(k) for k in train_keys]
        validation_keys = [str(k) for k in validation_keys]
    classes: set[int | str] = set(train_keys)
    # Messages count labels and never quote them: they are data.
    if len(classes) < 2:
        found = "a single class" if classes else "no labels"
        raise DatasetError(f"the training data has {found}; classification needs at least two")
    unseen = {k for k in validation_keys if k not in classes}
    if unseen:
        raise DatasetError(f"{len(unseen)} validation label(s) never occur in the training data")
    # All keys are of one kind here: ints sort numerically, strings by text.
    ordered = sorted(classes, key=lambda c: (c if isinstance(c, int) else 0, str(c)))
    index = {c: i for i, c in enumerate(ordered)}
    names = [str(c) for c in ordered]
    return [index[k] for k in train_keys], [index[k] for k in validation_keys], names


def split_validation(
    split: RawSplit, fraction: float, *, seed: int = 0
) -> tuple[RawSplit, RawSplit]:
    """Hold out ``fraction`` of the rows, per class when there are labels.

    The split depends only on the data and ``seed`` (not on the trial), so all
    trials of a study validate on the same rows.

    Raises:
        DatasetError: too few rows to keep at least one on each side.
    """
    if len(split.texts) < 2:
        raise DatasetError(
            f"{len(split.texts)} row(s) cannot be split into training and validation"
        )
    rng = random.Random(seed)
    groups: dict[Any, list[int]] = defaultdict(list)
    for i in range(len(split.texts)):
        groups[_normalize(split.labels[i]) if split.labels is not None else None].append(i)
    held_out: list[int] = []
    for key in sorted(groups, key=str):
        members = groups[key]
        rng.shuffle(members)
        # A class with one row stays in training: validation could not score it anyway.
        share = max(1, round(fraction * len(members)))
        take = min(len(members) - 1, share)
        held_out.extend(members[:take])
    if not held_out:
        raise DatasetError("the data is too small to hold out a validation set")
    chosen = set(held_out)
    kept = [i for i in range(len(split.texts)) if i not in chosen]
    return _subset(split, kept), _subset(split, sorted(held_out))


def _subset(split: RawSplit, rows: list[int]) -> RawSplit:
    labels = [split.labels[i] for i in rows] if split.labels is not None else None
    return RawSplit([split.texts[i] for i in rows], labels)


def _normalize(label: Any) -> int | str:
    if isinstance(label, bool):
        return int(label)
    if isinstance(label, int):
        return label
    if isinstance(label, float) and label.is_integer():
        return int(label)
    item = getattr(label, "item", None)
    if callable(item):
        # numpy scalars from pandas / pyarrow.
        return _normalize(item())
    return str(label).strip()
