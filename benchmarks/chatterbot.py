"""Real short English texts in many classes: the conversations of ``chatterbot-corpus``.

The PyPI package ships one YAML file per topic (``ai.yml``, ``food.yml``,
``trivia.yml``...), each a list of conversations, each a list of lines::

    categories:
    - food
    conversations:
    - - Do you drink?
      - My brain does not require any beverages.

Every line becomes a row labelled with its file's topic. The package is
downloaded as a wheel (``pip download --no-deps``) and read from the zip: it
is data for this benchmark, never installed, never a dependency.
"""

from __future__ import annotations

import csv
import subprocess
import sys
import zipfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PACKAGE = "chatterbot-corpus==1.3.3"
ENGLISH = "chatterbot_corpus/data/english/"

Row = tuple[str, str]


class MissingCorpus(Exception):
    """The wheel could not be found or downloaded; the message says how to get it."""


def download_wheel(folder: Path) -> Path:
    """The corpus wheel in ``folder``, downloaded there with pip when it is not.

    Raises:
        MissingCorpus: pip could not download it (no index reachable, for one).
    """
    wheels = sorted(folder.glob("chatterbot_corpus-*.whl"))
    if wheels:
        return wheels[-1]
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run(
        [*command, "--dest", str(folder), PACKAGE], capture_output=True, text=True, check=False
    )
    wheels = sorted(folder.glob("chatterbot_corpus-*.whl"))
    if done.returncode != 0 or not wheels:
        raise MissingCorpus(
            f"could not download {PACKAGE} ({done.stderr.strip()[-300:]}): run "
            f"`pip download --no-deps {PACKAGE} -d DIR` where an index is reachable and "
            "pass --chatterbot-wheel DIR/chatterbot_corpus-1.3.3-py2.py3-none-any.whl"
        )
    return wheels[-1]


def wheel_documents(wheel: Path) -> list[tuple[str, str]]:
    """(topic, YAML text) of each English file in the wheel, the topic being the file's stem."""
    with zipfile.ZipFile(wheel) as archive:
        return [
            (Path(name).stem, archive.read(name).decode("utf-8"))
            for name in sorted(archive.namelist())
            if name.startswith(ENGLISH) and name.endswith((".yml", ".yaml"))
        ]


def conversation_rows(documents: Iterable[tuple[str, str]]) -> list[Row]:
    """(line, topic) for every line of every conversation, in file order, repeats kept."""
    import yaml

    rows = []
    for topic, text in documents:
        loaded: Any = yaml.safe_load(text) or {}
        for conversation in loaded.get("conversations") or []:
            for line in conversation or []:
                if line is not None and str(line).strip():
                    rows.append((" ".join(str(line).split()), topic))
    return rows


def labelled_rows(rows: Iterable[Row], min_per_topic: int) -> list[Row]:
    """Each distinct text once, with its topic.

    A text found under two topics (``Hello`` in greetings and in conversations)
    says nothing about either and is left out; so are topics with fewer than
    ``min_per_topic`` distinct texts, too few to hold some out for validation.
    """
    topics: dict[str, set[str]] = defaultdict(set)
    for text, topic in rows:
        topics[text].add(topic)
    single = [(text, next(iter(found))) for text, found in topics.items() if len(found) == 1]
    sizes = Counter(topic for _, topic in single)
    return [(text, topic) for text, topic in single if sizes[topic] >= min_per_topic]


def split_rows(
    rows: Sequence[Row], validation_fraction: float, seed: int = 0
) -> tuple[list[Row], list[Row]]:
    """Training and validation rows, stratified by topic (each topic's share kept)."""
    from sklearn.model_selection import train_test_split

    train, validation = train_test_split(
        list(rows),
        test_size=validation_fraction,
        random_state=seed,
        stratify=[topic for _, topic in rows],
    )
    return list(train), list(validation)


def write_rows(path: Path, rows: Sequence[Row]) -> Path:
    """A CSV with columns ``text`` and ``label``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path
