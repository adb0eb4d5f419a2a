"""Real word and phrase pairs from a FreeDict dictionary (Debian's ``dict-freedict-*``).

A dictd dictionary is two files: ``NAME.index``, one line per headword
(``headword<TAB>offset<TAB>length``, the numbers in dictd's base 64), and
``NAME.dict.dz``, the entries one after the other, gzip-compressed (dictzip
is gzip with a random-access table that a plain reader skips). A FreeDict
entry starts with its headword as written (case kept) and its pronunciation,
then its senses, one a line, numbered when there are several::

    abandon /əbændən/
    1. abdiquer
    2. abandonner, délaisser, livrer, quitter

Each entry gives one pair: the headword and the first translation of its
first sense (``abandon`` → ``abdiquer``).
"""

from __future__ import annotations

import csv
import gzip
import random
import re
from collections.abc import Sequence
from pathlib import Path

DICTD_DIR = Path("/usr/share/dictd")
_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# The headword line: the headword, then an optional /pronunciation/ and <grammar>.
_HEAD = re.compile(r"^(?P<head>.+?)(?:\s+/[^/]*/)?(?:\s+<[^>]*>)?\s*$")
_SENSE_NUMBER = re.compile(r"^\d+\.\s*")

Pair = tuple[str, str]


class MissingDictionary(Exception):
    """The dictionary's files are not installed; the message says which package to install."""


def decode_number(text: str) -> int:
    """A dictd index number: base 64, most significant digit first (``B`` is 1, ``BA`` is 64).

    Raises:
        ValueError: a character outside dictd's digits.
    """
    value = 0
    for char in text:
        digit = _DIGITS.find(char)
        if digit < 0:
            raise ValueError(f"{char!r} is not a dictd base-64 digit (in {text!r})")
        value = value * 64 + digit
    return value


def read_index(path: Path) -> list[tuple[str, int, int]]:
    """(headword, offset, length) of each entry in a ``.index`` file, in file order.

    The dictionary's own ``00database…`` entries (its description) are left out.
    """
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) < 3 or fields[0].startswith(("00database", "00-database")):
            continue
        entries.append((fields[0], decode_number(fields[1]), decode_number(fields[2])))
    return entries


def first_translation(entry: str) -> Pair | None:
    """(headword as written, first translation of the first sense) of one entry's text.

    None when the entry has no translation.
    """
    lines = [line.strip() for line in entry.strip().splitlines()]
    match = _HEAD.match(lines[0]) if lines else None
    if match is None:
        return None
    for line in lines[1:]:
        sense = _SENSE_NUMBER.sub("", line)
        translation = re.split(r"[,;]\s", sense, maxsplit=1)[0].strip()
        if translation:
            return match["head"].strip(), translation
    return None


def dictionary_files(name: str, folder: Path = DICTD_DIR) -> tuple[Path, Path]:
    """The ``.index`` and ``.dict.dz`` files of dictionary ``name`` (``freedict-eng-fra``).

    Raises:
        MissingDictionary: either file is missing; says which Debian package holds them.
    """
    index, data = folder / f"{name}.index", folder / f"{name}.dict.dz"
    missing = [str(path) for path in (index, data) if not path.is_file()]
    if missing:
        raise MissingDictionary(
            f"{' and '.join(missing)} not found: install the Debian package dict-{name} "
            f"(apt-get install dict-{name})"
        )
    return index, data


def read_pairs(name: str, folder: Path = DICTD_DIR) -> list[Pair]:
    """Every headword of the dictionary with its first translation, one pair per headword.

    Several index lines can point at one entry, and a headword can have several
    entries: the first entry of each headword in the dictionary's text is kept,
    so that no source is both in training and in validation.

    Raises:
        MissingDictionary: the dictionary is not installed.
    """
    index, data = dictionary_files(name, folder)
    with gzip.open(data) as handle:
        text = handle.read()
    pairs: dict[str, str] = {}
    for _, offset, length in sorted(read_index(index), key=lambda entry: entry[1]):
        pair = first_translation(text[offset : offset + length].decode("utf-8"))
        if pair is not None and pair[0] not in pairs:
            pairs[pair[0]] = pair[1]
    return list(pairs.items())


def split_pairs(
    pairs: Sequence[Pair], n_train: int, n_validation: int, seed: int = 0
) -> tuple[list[Pair], list[Pair]]:
    """A random ``n_train`` pairs for training and another ``n_validation`` for validation.

    Raises:
        ValueError: fewer pairs than asked for.
    """
    if n_train + n_validation > len(pairs):
        raise ValueError(f"{n_train} + {n_validation} pairs asked for, {len(pairs)} available")
    shuffled = list(pairs)
    random.Random(seed).shuffle(shuffled)
    return shuffled[:n_train], shuffled[n_train : n_train + n_validation]


def write_pairs(path: Path, pairs: Sequence[Pair]) -> Path:
    """A CSV with columns ``source`` and ``target``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["source", "target"])
        writer.writerows(pairs)
    return path


def nearest_neighbour_predictions(train: Sequence[Pair], sources: Sequence[str]) -> list[str]:
    """For each source, the target of the training source most alike in character 1-4-grams.

    What a lookup of spellings gets without learning to translate.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 4))
    known = vectorizer.fit_transform([source for source, _ in train])
    nearest = (vectorizer.transform(list(sources)) @ known.T).toarray().argmax(axis=1)
    return [train[int(i)][1] for i in nearest]
