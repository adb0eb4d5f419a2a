"""Text data for the BERT tasks: the builtin sentiment set, local files, hub
datasets, and the tokenizers that turn them into token ids.

Everything that can be wrong with a dataset is reported as a
:class:`~workers.errors.DatasetError` here, before any training starts.
"""

from __future__ import annotations

from workers.data.loading import DatasetSpec, TextData, load_text_data
from workers.data.tokenization import (
    encode_texts,
    pretrained_tokenizer,
    round_trip_failures,
    scratch_tokenizer,
    train_byte_bpe,
    wrap_tokenizer,
)

__all__ = [
    "DatasetSpec",
    "TextData",
    "encode_texts",
    "load_text_data",
    "pretrained_tokenizer",
    "round_trip_failures",
    "scratch_tokenizer",
    "train_byte_bpe",
    "wrap_tokenizer",
]
