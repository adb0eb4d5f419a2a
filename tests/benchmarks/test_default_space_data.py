"""The real data sets of the default-spaces benchmark: dictd dictionaries and chatterbot YAML."""

from __future__ import annotations

import gzip
import sys
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from benchmarks import chatterbot, default_spaces, freedict, translation_study
from storage.validation import ValidationPolicy, validate_spec

DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def encode_number(value: int) -> str:
    """dictd's base 64, written here the long way round to check the reader against."""
    text = DIGITS[value % 64]
    while value >= 64:
        value //= 64
        text = DIGITS[value % 64] + text
    return text


def write_dictionary(folder: Path, name: str, entries: list[tuple[list[str], str]]) -> None:
    """``name``.index and ``name``.dict.dz: each entry under each of its index headwords."""
    data, lines = b"", []
    for headwords, entry in entries:
        raw = entry.encode("utf-8")
        for headword in headwords:
            lines.append(f"{headword}\t{encode_number(len(data))}\t{encode_number(len(raw))}")
        data += raw
    (folder / f"{name}.index").write_text("\n".join(sorted(lines)) + "\n", encoding="utf-8")
    with gzip.open(folder / f"{name}.dict.dz", "wb") as handle:
        handle.write(data)


ENTRIES = [
    (["00databaseinfo"], "00-database-info\nThis is a test dictionary.\n"),
    (["abandon"], "abandon /əbændən/\n1. abdiquer\n2. abandonner, délaisser, quitter\n"),
    # The index lowercases; the entry keeps the headword's case.
    (["black forest", "Black Forest"], "Black Forest /blækfɔrist/\nForêt\u2010Noire\n"),
    (["abase oneself"], "abase oneself /əbeiswʌnself/\n1. s'humilier\n2. s'abaisser\n"),
    (["a lot of"], "a lot of /əlɔtɔf/\n1. beaucoup; maint\n2. beaucoup de\n"),
    (["cul-de-sac"], "cul-de-sac <n>\nimpasse\n"),
    (["abandon"], "abandon /əbændən/\nabandon\n"),  # a second entry of one headword
    (["empty"], "empty /empti/\n\n"),  # no translation
]


def test_dictd_numbers_are_base_64_most_significant_first() -> None:
    assert [freedict.decode_number(t) for t in ("A", "B", "/", "BA", "LOB")] == [
        0,
        1,
        63,
        64,
        11 * 64 * 64 + 14 * 64 + 1,
    ]
    assert all(freedict.decode_number(encode_number(n)) == n for n in (0, 63, 64, 138301))
    with pytest.raises(ValueError, match="base-64"):
        freedict.decode_number("A-")


def test_each_headword_once_with_the_first_translation_of_its_first_sense(
    tmp_path: Path,
) -> None:
    write_dictionary(tmp_path, "freedict-eng-fra", ENTRIES)

    pairs = freedict.read_pairs("freedict-eng-fra", tmp_path)

    assert sorted(pairs) == [
        ("Black Forest", "Forêt\u2010Noire"),
        ("a lot of", "beaucoup"),
        ("abandon", "abdiquer"),
        ("abase oneself", "s'humilier"),
        ("cul-de-sac", "impasse"),
    ]


def test_a_missing_dictionary_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(freedict.MissingDictionary, match="apt-get install dict-freedict-eng-deu"):
        freedict.read_pairs("freedict-eng-deu", tmp_path)


def test_the_benchmark_exits_2_with_the_package_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["default_spaces", "--sets", "freedict", "--dictd-dir", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    monkeypatch.setattr(default_spaces, "SCRATCH", tmp_path / "scratch")

    with pytest.raises(SystemExit) as exited:
        default_spaces.main()

    assert exited.value.code == 2
    assert "dict-freedict-eng-fra" in capsys.readouterr().err


def test_validation_pairs_are_held_out_the_same_way_every_time() -> None:
    pairs = [(f"word{i}", f"mot{i}") for i in range(50)]

    train, validation = freedict.split_pairs(pairs, 30, 10, seed=1)

    assert (len(train), len(validation)) == (30, 10)
    assert not set(train) & set(validation)
    assert (train, validation) == freedict.split_pairs(pairs, 30, 10, seed=1)
    with pytest.raises(ValueError, match="50 available"):
        freedict.split_pairs(pairs, 45, 10)


def test_pairs_survive_the_csv_with_commas_quotes_and_accents(tmp_path: Path) -> None:
    pairs = [("a lot, of", 'beaucoup "de"'), ("someone's", "de quelqu'un"), ("été", "summer")]

    path = freedict.write_pairs(tmp_path / "pairs.csv", pairs)

    assert translation_study.read_pairs_csv(path) == pairs


def test_the_nearest_spelling_baseline_takes_the_closest_training_source() -> None:
    train = [("nation", "nation"), ("table", "table"), ("water", "eau")]

    assert freedict.nearest_neighbour_predictions(train, ["nations", "waters"]) == [
        "nation",
        "eau",
    ]


FOOD = """categories:
- food
conversations:
- - Do you drink?
  - My brain does not require any beverages.
- - Do you drink?
  - 1945
- - What is your favorite food?
  - Hello
"""
GREETINGS = """categories:
- greetings
conversations:
- - Hello
  - Hi,   there!
- - Good morning
  - "Good morning: how are you?"
- - Bonjour
"""
HEALTH = """categories:
- health
conversations:
- - An apple a day keeps the doctor away.
"""


def write_wheel(path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("chatterbot_corpus/data/english/food.yml", FOOD)
        archive.writestr("chatterbot_corpus/data/english/greetings.yml", GREETINGS)
        archive.writestr("chatterbot_corpus/data/english/health.yml", HEALTH)
        archive.writestr("chatterbot_corpus/data/spanish/food.yml", FOOD.replace("drink", "beber"))
        archive.writestr("chatterbot_corpus/__init__.py", "")
    return path


def test_every_english_conversation_line_is_a_row_of_its_files_topic(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")

    rows = chatterbot.conversation_rows(chatterbot.wheel_documents(wheel))

    assert Counter(topic for _, topic in rows) == {"food": 6, "greetings": 5, "health": 1}
    assert ("1945", "food") in rows
    assert ("Hi, there!", "greetings") in rows
    assert ("Good morning: how are you?", "greetings") in rows
    assert not any("beber" in text for text, _ in rows)


def test_rows_are_distinct_texts_of_one_topic_from_topics_big_enough(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")
    rows = chatterbot.conversation_rows(chatterbot.wheel_documents(wheel))

    labelled = chatterbot.labelled_rows(rows, min_per_topic=2)

    # "Hello" is in two topics; "Do you drink?" twice in one; health has one text.
    assert sorted(labelled) == [
        ("1945", "food"),
        ("Bonjour", "greetings"),
        ("Do you drink?", "food"),
        ("Good morning", "greetings"),
        ("Good morning: how are you?", "greetings"),
        ("Hi, there!", "greetings"),
        ("My brain does not require any beverages.", "food"),
        ("What is your favorite food?", "food"),
    ]


def test_the_split_keeps_each_topics_share(tmp_path: Path) -> None:
    rows = [(f"{topic} text {i}", topic) for topic, n in (("a", 40), ("b", 20)) for i in range(n)]

    train, validation = chatterbot.split_rows(rows, 0.25, seed=0)

    assert Counter(t for _, t in validation) == {"a": 10, "b": 5}
    assert Counter(t for _, t in train) == {"a": 30, "b": 15}
    written = chatterbot.write_rows(tmp_path / "validation.csv", validation)
    assert list(zip(*default_spaces.read_csv(written), strict=True)) == validation


def test_a_downloaded_wheel_is_used_without_asking_the_index(tmp_path: Path) -> None:
    wheel = write_wheel(tmp_path / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")

    assert chatterbot.download_wheel(tmp_path) == wheel


@pytest.mark.parametrize("max_epochs", [3, None])
def test_the_studies_are_specs_the_service_accepts_with_the_default_space(
    tmp_path: Path, max_epochs: int | None
) -> None:
    train = freedict.write_pairs(tmp_path / "train.csv", [("veal", "veau")])
    policy = ValidationPolicy(dataset_roots=[tmp_path])

    pairs = validate_spec(
        translation_study.translation_spec(train, train, 8, max_epochs, 1000), policy
    )
    texts = validate_spec(
        default_spaces.spec("chatterbot", "scratch", train, train, 8, max_epochs=max_epochs),
        policy,
    )

    for resolved, task in ((pairs, "seq2seq"), (texts, "text-classification")):
        assert resolved.task.name == task
        assert set(resolved.search_space) >= {"learning_rate", "batch_size", "num_layers"}
        config = resolved.task.config
        # No length given: the task's own default, training until a plateau.
        assert config["max_epochs"] == (max_epochs or 20)
        assert (config["early_stopping"] is None) == (max_epochs is not None)
    assert pairs.task.config["model"]["vocab_size"] == 1000


def test_what_a_translation_trial_generates_is_counted() -> None:
    facts = translation_study.prediction_facts(
        ["veau", "veau", "sip", "gloire"], ["veal", "pious", "sip", "glory"], ["veau", "matin"]
    )

    assert facts == "0.75 / 0.25 / 0.50"
