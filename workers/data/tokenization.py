"""Tokenizers: a byte-level BPE trained locally for scratch models, cached by dataset.

The scratch tokenizer is lossless: it works on the UTF-8 bytes of the text
(every byte is in the vocabulary, so nothing is ever unknown or dropped), keeps
case, accents, punctuation and whitespace, and its decoder gives back exactly
the text that was encoded (one leading space aside: see
:func:`train_byte_bpe`). Generated text is therefore what the model wrote,
and a classifier sees what the user wrote. (The WordPiece it replaces
lowercased, stripped accents, split punctuation and dropped characters it had
not seen: ``well-known`` came back as ``well - known``.)

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

from tokenizers import Tokenizer, decoders, pre_tokenizers, processors
from tokenizers.models import BPE
from tokenizers.trainers import BpeTrainer
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from workers.errors import ModelLoadError

logger = logging.getLogger(__name__)

PAD, UNK, CLS, SEP, MASK = "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"
SPECIAL_TOKENS = (PAD, UNK, CLS, SEP, MASK)
_CACHE_FILE = "tokenizer.json"
# Part of the cache folder's name: a tokenizer of another kind is never reused.
_KIND = "bytebpe1"


def scratch_tokenizer(
    texts: Sequence[str],
    *,
    vocab_size: int,
    fingerprint: str,
    cache_dir: Path,
    max_length: int,
) -> Any:
    """A lossless byte-level BPE tokenizer for ``texts``, from the cache when present.

    The result is a ``transformers`` fast tokenizer (``save_pretrained`` works);
    its vocabulary may be smaller than ``vocab_size`` on a small corpus, and is
    never smaller than the 256 bytes plus the special tokens.
    """
    folder = cache_dir / "tokenizers" / f"{fingerprint[:32]}-{_KIND}-v{vocab_size}"
    cached = folder / _CACHE_FILE
    if cached.is_file():
        tokenizer = Tokenizer.from_file(str(cached))
        logger.info("tokenizer from cache %s", folder.name)
    else:
        tokenizer = train_byte_bpe(texts, vocab_size)
        _write_atomically(tokenizer, cached)
        logger.info("trained a byte-level BPE tokenizer (%d tokens)", tokenizer.get_vocab_size())
    return wrap_tokenizer(tokenizer, max_length=max_length)


def train_byte_bpe(texts: Sequence[str], vocab_size: int) -> Tokenizer:
    """Train a cased byte-level BPE; ``[CLS] text [SEP]`` framing, BERT's special tokens.

    No normalizer: ``decode(encode(text))`` is ``text``, byte for byte, except
    that a text which starts with a space loses that one space. A space is put
    before the first word so that a word has the same tokens at the start of a
    text as inside it; the decoder takes it away again. The special tokens
    come first, so their ids are their places in ``SPECIAL_TOKENS`` whatever
    the corpus.
    """
    tokenizer = Tokenizer(BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
    tokenizer.decoder = decoders.Sequence(
        [decoders.ByteLevel(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
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
    """The ``transformers`` face of a ``tokenizers`` tokenizer.

    ``clean_up_tokenization_spaces`` is off (and saved so with the model):
    that clean-up deletes spaces before punctuation, which would change text
    the byte-level decoder already gives back exactly.
    """
    # transformers leaves this constructor unannotated.
    return PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=tokenizer,
        unk_token=UNK,
        pad_token=PAD,
        cls_token=CLS,
        sep_token=SEP,
        mask_token=MASK,
        model_max_length=max_length,
        clean_up_tokenization_spaces=False,
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


def round_trip_failures(
    tokenizer: Any, texts: Sequence[str], *, max_chars: int = 300
) -> list[tuple[str, str]]:
    """The texts that ``decode(encode(text))`` does not give back, with what it gives.

    Runs of whitespace count as one space (and none at the ends); each text is
    cut to ``max_chars`` first, so the check is cheap and never truncated by
    the tokenizer. A checkpoint's own tokenizer may lowercase, strip accents or
    split punctuation: this is how a task finds out and says so.
    """
    failures = []
    for text in texts:
        cut = text[:max_chars]
        # verbose=False: a text longer than the model's positions is fine here.
        ids = tokenizer(cut, truncation=False, verbose=False)["input_ids"]
        back = tokenizer.decode(ids, skip_special_tokens=True)
        if " ".join(back.split()) != " ".join(cut.split()):
            failures.append((cut, back))
    return failures


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
