"""Reading local dataset files (csv, jsonl, parquet, plain text) into raw splits.

Every way a file can be unusable becomes a :class:`~workers.errors.DatasetError`
whose message names the file and says what to fix, so that a bad spec fails
before any training starts.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from storage.paths import PathNotAllowedError, resolve_confined
from workers.errors import DatasetError

logger = logging.getLogger(__name__)

TABLE_SOURCES = ("csv", "jsonl", "parquet")


@dataclass(frozen=True)
class RawSplit:
    """Texts and, for classification, their labels as found in the data."""

    texts: list[str]
    labels: list[Any] | None


def resolve_dataset_path(path: str, roots: list[Path]) -> Path:
    """The real location of a dataset file below one of ``roots``.

    Raises:
        DatasetError: outside the roots (``..``, symlinks leading out
            included), missing, or not a regular file.
    """
    try:
        resolved = resolve_confined(path, roots, must_exist=True)
    except PathNotAllowedError as exc:
        raise DatasetError(str(exc)) from None
    if not resolved.is_file():
        raise DatasetError(f"{path!r} is not a file")
    return resolved


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes, read in chunks (datasets can be large)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_table_split(
    path: Path,
    source: str,
    text_column: str,
    label_column: str | None,
    *,
    column_fields: str = "text_column / label_column",
) -> RawSplit:
    """Rows of a csv / jsonl / parquet file as texts (and labels).

    Rows whose text or label is missing are dropped with a warning.

    Raises:
        DatasetError: empty or unreadable file, no rows, a missing column.
    """
    frame = _read_frame(path, source)
    wanted = [text_column] + ([label_column] if label_column is not None else [])
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        # The header is data too (a file's first line): count its columns, never quote them.
        raise DatasetError(
            f"{path.name}: column(s) {', '.join(map(repr, missing))} not found among its "
            f"{len(frame.columns)} columns (set {column_fields})"
        )
    kept = frame[wanted].dropna()
    if len(kept) < len(frame):
        logger.warning(
            "%s: dropped %d rows with a missing text or label", path.name, len(frame) - len(kept)
        )
    texts = [str(value) for value in kept[text_column].tolist()]
    labels = kept[label_column].tolist() if label_column is not None else None
    return _without_blank_texts(RawSplit(texts, labels), path.name)


def read_text_split(path: Path) -> RawSplit:
    """Non-blank lines of a UTF-8 text file, one example each.

    Raises:
        DatasetError: unreadable (not UTF-8, I/O error) or no non-blank line.
    """
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        # Decoding errors quote the bytes they stopped at: name the type only.
        raise DatasetError(
            f"{path.name}: cannot read the file as UTF-8 text ({type(exc).__name__})"
        ) from None
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise DatasetError(f"{path.name}: the file has no text (it is empty or blank)")
    return RawSplit(texts, None)


def _read_frame(path: Path, source: str) -> pd.DataFrame:
    if path.stat().st_size == 0:
        raise DatasetError(f"{path.name}: the file is empty")
    try:
        if source == "csv":
            frame = pd.read_csv(path)
        elif source == "jsonl":
            frame = pd.read_json(path, lines=True)
        elif source == "parquet":
            frame = pd.read_parquet(path)
        else:
            raise DatasetError(f"unknown table source {source!r}; use one of {TABLE_SOURCES}")
    except pd.errors.EmptyDataError:
        raise DatasetError(f"{path.name}: the file has no rows") from None
    except DatasetError:
        raise
    except Exception as exc:
        # pandas and pyarrow raise many unrelated types for a malformed file, and
        # their messages may quote its contents: the type only; the log has the rest.
        logger.warning("%s: reading it as %s failed", path.name, source, exc_info=True)
        raise DatasetError(
            f"{path.name}: cannot read it as {source} ({type(exc).__name__})"
        ) from None
    if len(frame) == 0:
        raise DatasetError(f"{path.name}: the file has no rows")
    return frame


def _without_blank_texts(split: RawSplit, name: str) -> RawSplit:
    keep = [i for i, text in enumerate(split.texts) if text.strip()]
    if not keep:
        raise DatasetError(f"{name}: no row has a non-empty text")
    if len(keep) == len(split.texts):
        return split
    logger.warning("%s: dropped %d rows with a blank text", name, len(split.texts) - len(keep))
    labels = [split.labels[i] for i in keep] if split.labels is not None else None
    return RawSplit([split.texts[i] for i in keep], labels)
