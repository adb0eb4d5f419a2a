"""Tokenizers give back the text: every kind the tasks train, and what a checkpoint ships."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from workers.data import encode_texts, round_trip_failures, scratch_tokenizer
from workers.data.sentiment import generate_reviews
from workers.data.tokenization import SPECIAL_TOKENS
from workers.data.translation import generate_pairs

# Text a user's data holds and the training corpora below never show: case,
# punctuation inside and between words, accents, digits, other scripts, emoji,
# markup and runs of whitespace.
CORPUS = [
    "well-known",
    "l'homme d'affaires",
    "Hello, world!",
    "café 3.5 x",
    "state-of-the-art, isn't it? (yes: 100%)",
    'Don\'t split "quotes" -- or em—dashes…',
    "naïve coöperation; Ærøskøbing; Straße; İstanbul",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "emoji 👍🏽 and 👨‍👩‍👧 and 🇫🇷!",
    "<b>bold</b> & a@b.com http://x.org/a?b=c#d",
    "tabs\tand\nnew lines  and  double  spaces",
    "1,234.56 -7e-3 0x1F 2026-12-07T10:00Z",
    "ALL CAPS and MiXeD cAsE",
]


def _corpora() -> dict[str, list[str]]:
    reviews, _ = generate_reviews(400, seed=0, stream="train", label_noise=0.0)
    sources, targets = generate_pairs(400, seed=0, stream="train")
    # What each task trains its tokenizer on: texts (classification, MLM, NSP)
    # or both sides of the pairs (seq2seq).
    return {"texts": reviews, "pairs": [*sources, *targets]}


@pytest.fixture(scope="module", params=["texts", "pairs"])
def trained(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """A scratch tokenizer as the tasks build it, saved and loaded again as a user would."""
    folder = tmp_path_factory.mktemp(f"tokenizer-{request.param}")
    tokenizer = scratch_tokenizer(
        _corpora()[request.param],
        vocab_size=400,
        fingerprint="a" * 64,
        cache_dir=folder,
        max_length=512,
    )
    tokenizer.save_pretrained(folder / "saved")
    return AutoTokenizer.from_pretrained(folder / "saved")


def _round_trip(tokenizer: Any, text: str) -> str:
    ids = tokenizer(text)["input_ids"]
    return str(tokenizer.decode(ids, skip_special_tokens=True))


@pytest.mark.parametrize("text", CORPUS)
def test_scratch_tokenizers_give_back_unseen_text_exactly(trained: Any, text: str) -> None:
    assert _round_trip(trained, text) == text
    assert trained.unk_token_id not in trained(text)["input_ids"]


def test_batch_decoding_with_special_tokens_skipped_is_exact(trained: Any) -> None:
    ids = encode_texts(trained, CORPUS, max_length=512)
    assert trained.batch_decode(ids, skip_special_tokens=True) == CORPUS
    assert round_trip_failures(trained, CORPUS) == []


# Any text without surrogates or the special tokens' own spelling.
_texts = st.text(st.characters(exclude_categories=("Cs",)), max_size=60).filter(
    lambda t: not t.startswith(" ") and not any(s in t for s in SPECIAL_TOKENS)
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=_texts)
def test_any_text_round_trips(trained: Any, text: str) -> None:
    assert _round_trip(trained, text) == text


def test_only_a_leading_space_is_lost(trained: Any) -> None:
    # The documented normalization: the space put before the first word is taken away again.
    assert _round_trip(trained, "  two leading") == " two leading"
    assert _round_trip(trained, "") == ""


def test_a_lossy_checkpoint_tokenizer_is_found_out(minilm_dir: Path) -> None:
    # MiniLM's tokenizer is uncased WordPiece: it lowercases and strips accents.
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir)
    failures = round_trip_failures(tokenizer, ["Café", "plain words", "Hello"])
    assert [text for text, _ in failures] == ["Café", "Hello"]
    assert failures[0][1] == "cafe"
