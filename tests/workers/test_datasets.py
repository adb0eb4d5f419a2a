"""Datasets: the builtin generator, local files, hub access, tokenizers."""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from pydantic import TypeAdapter
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from transformers import AutoTokenizer

from storage.tasks.text import ClassificationDataset, CorpusDataset, HubTextDataset
from workers.data import encode_texts, load_text_data, scratch_tokenizer
from workers.data.sentiment import generate_reviews
from workers.errors import DatasetError

_classification = TypeAdapter(ClassificationDataset)
_corpus = TypeAdapter(CorpusDataset)


def _load(spec: dict[str, Any], roots: list[Path], *, with_labels: bool = True) -> Any:
    adapter = _classification if with_labels else _corpus
    return load_text_data(adapter.validate_python(spec), roots, with_labels=with_labels)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _rows(n: int = 40) -> list[dict[str, Any]]:
    return [
        {
            "text": f"review number {i} was {'good' if i % 2 else 'bad'}",
            "label": "pos" if i % 2 else "neg",
        }
        for i in range(n)
    ]


# --- the builtin sentiment generator -------------------------------------------------


def test_sentiment_is_deterministic_balanced_and_streams_are_independent() -> None:
    texts, labels = generate_reviews(500, seed=3, stream="train", label_noise=0.05)
    again, _ = generate_reviews(500, seed=3, stream="train", label_noise=0.05)
    other, _ = generate_reviews(500, seed=4, stream="train", label_noise=0.05)
    validation, _ = generate_reviews(500, seed=3, stream="validation", label_noise=0.05)
    assert texts == again
    assert texts != other
    assert len(set(texts) & set(validation)) < 25
    assert 0.4 < sum(labels) / len(labels) < 0.6


def test_sentiment_has_negation_contrast_and_noise() -> None:
    texts, clean = generate_reviews(2000, seed=0, stream="train", label_noise=0.0)
    _, noisy = generate_reviews(2000, seed=0, stream="train", label_noise=0.2)
    joined = " ".join(texts)
    for marker in (" not ", "n't ", " never ", " but ", "although ", " very ", " slightly "):
        assert marker in joined
    flipped = sum(a != b for a, b in zip(clean, noisy, strict=True)) / len(clean)
    assert 0.15 < flipped < 0.25


def test_sentiment_needs_more_than_a_bag_of_words() -> None:
    train, train_labels = generate_reviews(3000, seed=0, stream="train", label_noise=0.0)
    test, test_labels = generate_reviews(1000, seed=0, stream="validation", label_noise=0.0)

    def accuracy(ngrams: tuple[int, int]) -> float:
        vectorizer = CountVectorizer(ngram_range=ngrams, token_pattern=r"[a-z']+")
        features = vectorizer.fit_transform(train)
        model = LogisticRegression(max_iter=2000).fit(features, train_labels)
        return float(model.score(vectorizer.transform(test), test_labels))

    bag_of_words, with_bigrams = accuracy((1, 1)), accuracy((1, 2))
    # Negation flips words' meaning: single words alone fall well short.
    assert bag_of_words < 0.75
    assert with_bigrams > bag_of_words + 0.05


def test_builtin_dataset_has_named_labels_and_fingerprint(tmp_path: Path) -> None:
    spec = {"source": "builtin", "n_train": 100, "n_validation": 30, "seed": 1}
    data = _load(spec, [tmp_path])
    assert data.label_names == ["negative", "positive"]
    assert (len(data.train_texts), len(data.validation_texts)) == (100, 30)
    assert data.fingerprint == _load(spec, [tmp_path]).fingerprint
    assert data.fingerprint != _load({**spec, "seed": 2}, [tmp_path]).fingerprint
    corpus = _load(spec, [tmp_path], with_labels=False)
    assert corpus.train_labels is None and corpus.train_texts == data.train_texts


# --- local files ---------------------------------------------------------------------


def test_csv_with_string_labels_is_split_per_class(tmp_path: Path) -> None:
    rows = _rows(40) + [{"text": "so so", "label": "neutral"}] * 10
    path = _write_csv(tmp_path / "reviews.csv", rows)
    data = _load({"source": "csv", "path": str(path), "validation_fraction": 0.2}, [tmp_path])
    assert data.label_names == ["neg", "neutral", "pos"]
    assert len(data.validation_texts) == 10
    assert sorted(set(data.validation_labels)) == [0, 1, 2]


def test_jsonl_parquet_and_validation_path(tmp_path: Path) -> None:
    train = tmp_path / "train.jsonl"
    train.write_text(
        "\n".join(json.dumps({"body": f"text {i}", "stars": i % 3 + 1}) for i in range(30))
    )
    validation = tmp_path / "validation.parquet"
    pd.DataFrame({"body": ["a", "b", "c"], "stars": [3, 1, 2]}).to_parquet(validation)
    data = _load(
        {"source": "jsonl", "path": str(train), "text_column": "body", "label_column": "stars"},
        [tmp_path],
    )
    # Integer labels sort numerically.
    assert data.label_names == ["1", "2", "3"]
    table = tmp_path / "train.parquet"
    pd.read_json(train, lines=True).to_parquet(table)
    data = _load(
        {
            "source": "parquet",
            "path": str(table),
            "validation_path": str(validation),
            "text_column": "body",
            "label_column": "stars",
        },
        [tmp_path],
    )
    assert data.validation_texts == ["a", "b", "c"]
    assert data.validation_labels == [2, 0, 1]


def test_validation_label_unseen_in_training(tmp_path: Path) -> None:
    train = _write_csv(tmp_path / "train.csv", _rows(20))
    validation = _write_csv(tmp_path / "validation.csv", [{"text": "meh", "label": "neutral"}])
    with pytest.raises(DatasetError, match="1 validation label") as refused:
        _load({"source": "csv", "path": str(train), "validation_path": str(validation)}, [tmp_path])
    assert "neutral" not in str(refused.value)  # labels are data: never quoted


def test_plain_text_corpus(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\n  second line  \n" + "more text\n" * 20)
    data = _load({"source": "text", "path": str(path)}, [tmp_path], with_labels=False)
    assert len(data.train_texts) + len(data.validation_texts) == 22
    assert "second line" in data.train_texts + data.validation_texts


def test_fingerprint_follows_file_contents(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", _rows(20))
    spec = {"source": "csv", "path": str(path)}
    before = _load(spec, [tmp_path]).fingerprint
    assert _load(spec, [tmp_path]).fingerprint == before
    _write_csv(path, _rows(22))
    assert _load(spec, [tmp_path]).fingerprint != before


# --- clear errors before training ----------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="does not exist"):
        _load({"source": "csv", "path": str(tmp_path / "nope.csv")}, [tmp_path])


def test_paths_outside_the_roots(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    outside = _write_csv(tmp_path / "secret.csv", _rows(10))
    (root / "link.csv").symlink_to(outside)
    for path in (
        str(outside),
        str(root / ".." / "secret.csv"),
        str(root / "link.csv"),
        "/etc/passwd",
    ):
        with pytest.raises(DatasetError, match="outside the allowed dataset roots"):
            _load({"source": "csv", "path": path}, [root])


def test_missing_column_is_named_but_the_header_is_not_quoted(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", [{"review": "x", "label": 1}] * 5)
    with pytest.raises(DatasetError, match=r"'text'.*not found among its 2 columns") as refused:
        _load({"source": "csv", "path": str(path)}, [tmp_path])
    # A header is a file's first line: the error (shown to read tokens) never quotes it.
    assert "review" not in str(refused.value)


def test_empty_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DatasetError, match="empty"):
        _load({"source": "csv", "path": str(empty)}, [tmp_path])
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(DatasetError, match="no rows"):
        _load({"source": "csv", "path": str(header_only)}, [tmp_path])
    blank = tmp_path / "blank.txt"
    blank.write_text("\n  \n")
    with pytest.raises(DatasetError, match="no text"):
        _load({"source": "text", "path": str(blank)}, [tmp_path], with_labels=False)


def test_single_class(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "data.csv", [{"text": f"t{i}", "label": "pos"} for i in range(9)])
    with pytest.raises(DatasetError, match="single class"):
        _load({"source": "csv", "path": str(path)}, [tmp_path])


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"this is not parquet at all")
    with pytest.raises(DatasetError, match="cannot read it as parquet"):
        _load({"source": "parquet", "path": str(path)}, [tmp_path])


# --- hub datasets --------------------------------------------------------------------


def test_hub_without_the_datasets_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes the import fail
    with pytest.raises(DatasetError, match=r"`datasets` package.*internet"):
        _load({"source": "huggingface", "name": "stanfordnlp/sst2"}, [tmp_path])


def test_hub_unreachable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("Couldn't reach the Hugging Face Hub")

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "datasets", fake)
    with pytest.raises(DatasetError, match=r"ConnectionError.*internet access"):
        _load({"source": "huggingface", "name": "stanfordnlp/sst2"}, [tmp_path])


class _FakeHubDataset:
    """What the hub loader reads of a ``datasets.Dataset``."""

    def __init__(self, columns: dict[str, list[Any]]) -> None:
        self.columns = columns
        self.column_names = list(columns)
        self.features: dict[str, Any] = {name: object() for name in columns}

    def __getitem__(self, column: str) -> list[Any]:
        return self.columns[column]


def _fake_datasets(
    monkeypatch: pytest.MonkeyPatch, load: Any, packaged: tuple[str, ...] = ()
) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []

    def load_dataset(*args: Any, **kwargs: Any) -> Any:
        calls.append((args, kwargs))
        return load(*args, **kwargs)

    fake = types.ModuleType("datasets")
    fake.load_dataset = load_dataset  # type: ignore[attr-defined]
    fake.packaged_modules = types.SimpleNamespace(  # type: ignore[attr-defined]
        _PACKAGED_DATASETS_MODULES=dict.fromkeys(packaged)
    )
    monkeypatch.setitem(sys.modules, "datasets", fake)
    return calls


def test_hub_names_are_checked_again_on_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that is a folder only here, or a builder of local files, is never loaded."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "rows.csv").write_text("text,label\nTOPSECRET,1\n")
    calls = _fake_datasets(
        monkeypatch, lambda *a, **k: pytest.fail("loaded"), packaged=("futurefolder",)
    )
    for name in ("private", str(tmp_path / "private"), "../x", "csv", "futurefolder"):
        # Specs stored before the API refused these skip its validation: construct directly.
        spec = HubTextDataset.model_construct(
            source="huggingface",
            name=name,
            subset=None,
            split="train",
            validation_split=None,
            validation_fraction=0.1,
            text_column="text",
            label_column="label",
            revision=None,
        )
        with pytest.raises(DatasetError, match="refused") as refused:
            load_text_data(spec, [tmp_path], with_labels=True)
        assert "TOPSECRET" not in str(refused.value)
    assert calls == []


def test_hub_loads_run_no_remote_code_and_quote_no_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    texts = [f"text {i}" for i in range(20)]
    rows = _FakeHubDataset({"sentence": texts, "label": ["SECRET-LABEL", "b"] * 10})
    calls = _fake_datasets(monkeypatch, lambda *a, **k: rows)
    data = _load(
        {"source": "huggingface", "name": "org/reviews", "text_column": "sentence"}, [tmp_path]
    )
    assert data.label_names == ["SECRET-LABEL", "b"]
    assert calls[0][1]["trust_remote_code"] is False
    with pytest.raises(DatasetError, match=r"'text'.*not found among its 2 columns") as missing:
        _load({"source": "huggingface", "name": "org/reviews"}, [tmp_path])
    assert "sentence" not in str(missing.value)

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise ValueError("could not parse row: TOPSECRET-ROW-CONTENT")

    _fake_datasets(monkeypatch, broken)
    with pytest.raises(DatasetError, match=r"\(ValueError\)") as failed:
        _load({"source": "huggingface", "name": "org/reviews"}, [tmp_path])
    assert "TOPSECRET" not in str(failed.value)


# --- tokenizers ----------------------------------------------------------------------


def test_scratch_tokenizer_is_cached_and_saveable(tmp_path: Path) -> None:
    texts, _ = generate_reviews(300, seed=0, stream="train", label_noise=0.0)
    tokenizer = scratch_tokenizer(
        texts, vocab_size=300, fingerprint="f" * 64, cache_dir=tmp_path, max_length=32
    )
    cached = next((tmp_path / "tokenizers").glob("*/tokenizer.json"))
    stamp = cached.stat().st_mtime_ns
    again = scratch_tokenizer(
        texts, vocab_size=300, fingerprint="f" * 64, cache_dir=tmp_path, max_length=32
    )
    assert cached.stat().st_mtime_ns == stamp
    assert again.get_vocab() == tokenizer.get_vocab()
    assert list((tmp_path / "tokenizers" / cached.parent.name).iterdir()) == [cached]
    ids = encode_texts(tokenizer, ["The food was NOT good " * 20], max_length=16)[0]
    assert len(ids) == 16
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    tokenizer.save_pretrained(tmp_path / "saved")
    loaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    assert loaded("not good")["input_ids"] == tokenizer("not good")["input_ids"]
    assert loaded.mask_token == "[MASK]" and loaded.pad_token_id == tokenizer.pad_token_id
