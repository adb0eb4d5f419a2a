"""Tokenizers: a WordPiece trained locally for scratch models, cached by dataset.

Training a tokenizer takes seconds, and every trial of a study on the same
data and vocabulary size would get the same one, so it is cached in the
shared cache folder under the dataset fingerprint. Several workers may train
the same tokenizer at once: each writes a private temporary file and renames
it into place, which is atomic, so a reader never sees half a file.
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
from tokenizers.models import WordPiece
from tokenizers.trainers import WordPieceTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workers.errors import ModelLoadError

logger = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
_CACHE_FILE = "tokenizer.json"


def scratch_tokenizer(
    texts: Sequence[str],
    *,
    vocab_size: int,
    fingerprint: str,
    cache_dir: Path,
    max_length: int,
) -> Any:
    """A BERT-style WordPiece tokenizer for ``texts``, from the cache when present.

    The result is a ``transformers`` fast tokenizer (``save_pretrained`` works);
    its vocabulary may be smaller than ``vocab_size`` on a small corpus.
    """
    folder = cache_dir / "tokenizers" / f"{fingerprint[:32]}-v{vocab_size}"
    cached = folder / _CACHE_FILE
    if cached.is_file():
        tokenizer = Tokenizer.from_file(str(cached))
        logger.info("tokenizer from cache %s", folder.name)
    else:
        tokenizer = train_wordpiece(texts, vocab_size)
        _write_atomically(tokenizer, cached)
        logger.info("trained a WordPiece tokenizer (%d tokens)", tokenizer.get_vocab_size())
    return wrap_tokenizer(tokenizer, max_length=max_length)


def train_wordpiece(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train an uncased BERT WordPiece tokenizer; ``[CLS] text [SEP]`` framing."""
    tokenizer = Tokenizer(WordPiece(unk_token=UNK))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    cls_id, sep_id = tokenizer.token_to_id(CLS), tokenizer.token_to_id(SEP)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}",
        pair=f"{CLS} $A {SEP} $B:1 {SEP}:1",
        special_tokens=[(CLS, cls_id), (SEP, sep_id)],
    )
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer, *, max_length: int) -> Any:
    """The ``transformers`` face of a ``tokenizers`` tokenizer."""
    # transformers leaves this constructor unannotated.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=max_length,
    )


def pretrained_tokenizer(name_or_path: str, *, revision: str | None) -> Any:
    """The tokenizer saved with a checkpoint (local folder or hub id).

    Raises:
        ModelLoadError: it cannot be loaded, or it has no padding token.
    """
    try:
        # A checkpoint's own Python code never runs here: only the built-in classes.
        tokenizer = AutoTokenizer.from_pretrained(
            name_or_path, revision=revision, trust_remote_code=False
        )
    except Exception as exc:
        raise ModelLoadError(
            f"could not load the tokenizer of {name_or_path!r} ({type(exc).__name__}: {exc})"
        ) from None
    if tokenizer.pad_token_id is None:
        raise ModelLoadError(f"the tokenizer of {name_or_path!r} has no padding token")
    return tokenizer


def encode_texts(tokenizer: Any, texts: Sequence[str], *, max_length: int) -> list[list[int]]:
    """Token ids of each text with special tokens, cut to ``max_length``.

    No padding here: batches are padded to their own longest example.
    """
    encoded = tokenizer(
        list(texts),
        truncation=True,
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=False,
    )
    return [list(ids) for ids in encoded["input_ids"]]


def _write_atomically(tokenizer: Tokenizer, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=".tokenizer-", suffix=".tmp")
    os.close(handle)
    try:
        tokenizer.save(temporary)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
