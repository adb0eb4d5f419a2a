"""Documents of sentences, and BERT's next-sentence pairs built from them.

Where documents come from:

* the builtin set: generated documents of 2-5 reviews about one product kind;
* a plain text file: one sentence per line, documents separated by blank
  lines (the layout of BERT's pretraining corpora); a file without blank
  lines is one document;
* a table or hub dataset: each row is a document, cut into sentences after
  ``.``, ``!`` or ``?``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from storage.tasks.text import BuiltinTextDataset, PlainTextDataset
from workers.data import sentiment
from workers.data.files import file_digest, resolve_dataset_path
from workers.data.loading import DatasetSpec, fingerprint_of, load_text_data
from workers.errors import DatasetError

IS_NEXT, IS_RANDOM = 0, 1  # next_sentence_label values, as BertForPreTraining reads them
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class Documents:
    """Training and validation documents (lists of sentences) and their fingerprint."""

    train: list[list[str]]
    validation: list[list[str]]
    fingerprint: str

    @property
    def train_sentences(self) -> list[str]:
        return [sentence for document in self.train for sentence in document]


@dataclass(frozen=True)
class SentencePair:
    first: str
    second: str
    label: int  # IS_NEXT or IS_RANDOM


def load_documents(spec: DatasetSpec, roots: list[Path]) -> Documents:
    """The documents of a corpus, split into training and validation.

    Raises:
        DatasetError: the data cannot be used (see :func:`load_text_data`).
    """
    if isinstance(spec, BuiltinTextDataset):
        train, validation = (
            sentiment.generate_documents(n, seed=spec.seed, stream=stream)
            for n, stream in ((spec.n_train, "train"), (spec.n_validation, "validation"))
        )
        identity = f"documents-generator-v{sentiment.GENERATOR_VERSION}"
        return Documents(train, validation, fingerprint_of(spec, identity))
    if isinstance(spec, PlainTextDataset):
        return _plain_text_documents(spec, roots)
    rows = load_text_data(spec, roots, with_labels=False)
    return Documents(
        [split_sentences(text) for text in rows.train_texts],
        [split_sentences(text) for text in rows.validation_texts],
        fingerprint_of(spec, f"{rows.fingerprint}|documents"),
    )


def split_sentences(text: str) -> list[str]:
    """The sentences of a text, cut after ``.``, ``!`` or ``?`` and a space."""
    return [part.strip() for part in _SENTENCE_END.split(text) if part.strip()]


def nsp_pairs(documents: list[list[str]], *, seed: int) -> list[SentencePair]:
    """One pair per sentence that has a successor in its document.

    Half the time (a fair coin per pair) the second sentence is that
    successor (``IS_NEXT``), otherwise a sentence drawn from another document
    (``IS_RANDOM``), as in BERT. The same documents and seed give the same pairs.

    Raises:
        DatasetError: fewer than two documents (no "random" sentence to draw)
            or no document with two sentences.
    """
    if len(documents) < 2:
        raise DatasetError(
            "next-sentence prediction needs at least two documents (separate them with a "
            "blank line in a text file, or one row each in a table)"
        )
    rng = random.Random(seed)
    pairs: list[SentencePair] = []
    for index, document in enumerate(documents):
        for position in range(len(document) - 1):
            if rng.random() < 0.5:
                pairs.append(SentencePair(document[position], document[position + 1], IS_NEXT))
                continue
            other = rng.randrange(len(documents) - 1)
            other += other >= index  # any document but this one
            sentence = rng.choice(documents[other] or [""])
            pairs.append(SentencePair(document[position], sentence, IS_RANDOM))
    if not pairs:
        raise DatasetError("next-sentence prediction needs documents of two or more sentences")
    return pairs


def _plain_text_documents(spec: PlainTextDataset, roots: list[Path]) -> Documents:
    paths = [resolve_dataset_path(spec.path, roots)]
    if spec.validation_path is not None:
        paths.append(resolve_dataset_path(spec.validation_path, roots))
    read = [_read_documents(path) for path in paths]
    digests = ",".join(file_digest(path) for path in paths)
    fingerprint = fingerprint_of(spec, f"documents|{digests}")
    if len(read) == 2:
        return Documents(read[0], read[1], fingerprint)
    documents = read[0]
    if len(documents) < 2:
        raise DatasetError(
            f"{paths[0].name}: one document cannot be split into training and validation; "
            "separate documents with a blank line"
        )
    # Fixed seed: every trial of a study validates on the same documents.
    order = list(range(len(documents)))
    random.Random(0).shuffle(order)
    held_out = set(order[: max(1, round(spec.validation_fraction * len(documents)))])
    return Documents(
        [d for i, d in enumerate(documents) if i not in held_out],
        [d for i, d in enumerate(documents) if i in held_out],
        fingerprint,
    )


def _read_documents(path: Path) -> list[list[str]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(
            f"{path.name}: cannot read the file as UTF-8 text ({type(exc).__name__})"
        ) from None
    blocks = re.split(r"\n\s*\n", text)
    documents = [[line.strip() for line in block.splitlines() if line.strip()] for block in blocks]
    documents = [document for document in documents if document]
    if not documents:
        raise DatasetError(f"{path.name}: the file has no text (it is empty or blank)")
    return documents
