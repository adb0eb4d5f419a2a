"""seq2seq training throughput: our loop against ``transformers``' ``Seq2SeqTrainer``.

Both train the same encoder-decoder (a scratch BART built by
``scratch_bart_config`` from the same hyperparameters and seed) on the same
token ids (the builtin translation pairs, our scratch tokenizer), with the
same batch size, AdamW and linear schedule, teacher-forced cross-entropy and
no evaluation. The clock runs from the first measured step to the last: each
loop notes when a step starts (our ``compute_loss``, the Trainer's
``on_step_begin``) and how many real (non-padding) tokens its batch holds, so
building, warm-up steps and saving are not counted. Cases are interleaved
``--repeats`` times and the fastest run of each is kept (other processes on a
shared machine only ever slow a run down).

``Seq2SeqTrainer`` needs ``accelerate`` (in the dev extra).

Usage::

    python benchmarks/seq2seq_throughput.py [--steps 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # when run as a script

from storage.tasks.seq2seq import BuiltinPairDataset
from workers.data import encode_texts, scratch_tokenizer
from workers.data.pairs import load_pair_data
from workers.tasks.seq2seq import IGNORE_INDEX, encode_targets, token_loss

logger = logging.getLogger("seq2seq_throughput")
ARCHITECTURE = {
    "num_layers": 2,
    "hidden_size": 128,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
}
LEARNING_RATE = 1e-3


class StepClock:
    """Start times and real token counts of the training steps."""

    def __init__(self) -> None:
        self.starts: list[float] = []
        self.tokens: list[int] = []

    def tick(self, tokens: int) -> None:
        self.starts.append(time.perf_counter())
        self.tokens.append(tokens)

    def rate(self, warmup: int) -> tuple[float, float]:
        """(steps/s, real tokens/s) from step ``warmup`` to the last step's start."""
        elapsed = self.starts[-1] - self.starts[warmup]
        steps = len(self.starts) - 1 - warmup
        return steps / elapsed, sum(self.tokens[warmup:-1]) / elapsed


def _tokens(batch: dict[str, torch.Tensor]) -> int:
    return int(batch["attention_mask"].sum()) + int((batch["labels"] != IGNORE_INDEX).sum())


def prepare(folder: Path, n_train: int) -> dict[str, Any]:
    """Token ids of the builtin pairs and a factory of identical fresh models."""
    from transformers import AutoModelForSeq2SeqLM

    from workers.training.models import scratch_bart_config

    data = load_pair_data(BuiltinPairDataset(n_train=n_train, n_validation=20), [])
    tokenizer = scratch_tokenizer(
        data.tokenizer_corpus,
        vocab_size=1000,
        fingerprint=data.fingerprint,
        cache_dir=folder,
        max_length=64,
    )

    def new_model() -> Any:
        torch.manual_seed(0)
        config = scratch_bart_config(
            ARCHITECTURE,
            vocab_size=len(tokenizer),
            max_seq_len=64,
            pad_token_id=tokenizer.pad_token_id,
        )
        return AutoModelForSeq2SeqLM.from_config(config, attn_implementation="sdpa")

    probe = new_model()
    return {
        "tokenizer": tokenizer,
        "new_model": new_model,
        "sources": encode_texts(tokenizer, data.train_sources, max_length=64),
        "labels": encode_targets(tokenizer, probe, data.train_targets, 32),
    }


def run_ours(prepared: dict[str, Any], args: argparse.Namespace, work: Path) -> StepClock:
    import optuna

    from workers.context import TrialContext
    from workers.tasks.seq2seq import _batch
    from workers.training import TrainingJob, TrainSettings, train

    clock, model = StepClock(), prepared["new_model"]()
    sources, labels = prepared["sources"], prepared["labels"]

    def collate(rows: list[int]) -> dict[str, torch.Tensor]:
        return _batch([sources[i] for i in rows], [labels[i] for i in rows], 0, 1)

    def compute_loss(forward: Callable[..., Any], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        clock.tick(_tokens(batch))
        return token_loss(forward, model, batch)

    job = TrainingJob(
        model=model,
        tokenizer=prepared["tokenizer"],
        train_lengths=[len(s) + len(t) for s, t in zip(sources, labels, strict=True)],
        collate=collate,
        compute_loss=compute_loss,
        evaluate=lambda forward: {"val_loss": 0.0},
    )
    settings = TrainSettings(
        learning_rate=LEARNING_RATE,
        batch_size=args.batch_size,
        max_epochs=1,
        seed=0,
        max_steps=args.steps + args.warmup_steps,
        weight_decay=0.01,
    )
    trial = optuna.create_study().ask()
    ctx = TrialContext(
        trial=trial,
        params={},
        config={},
        objective_metrics=["val_loss"],
        seed=0,
        device="cpu",
        work_dir=work / "ours",
        cache_dir=work,
        dataset_roots=[],
    )
    train(job, settings, ctx)
    return clock


def run_trainer(
    prepared: dict[str, Any], args: argparse.Namespace, work: Path, *, grouped: bool
) -> StepClock:
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        TrainerCallback,
    )

    clock, model = StepClock(), prepared["new_model"]()
    rows = [
        {"input_ids": s, "attention_mask": [1] * len(s), "labels": t}
        for s, t in zip(prepared["sources"], prepared["labels"], strict=True)
    ]
    collator = DataCollatorForSeq2Seq(prepared["tokenizer"], model=model)
    pending: list[int] = []

    def collate(features: list[dict[str, Any]]) -> Any:
        batch = collator(features)
        pending.append(_tokens(batch))
        return batch

    class Tick(TrainerCallback):  # type: ignore[misc]
        def on_step_begin(self, *unused: Any, **kwargs: Any) -> None:
            clock.tick(pending[-1] if pending else 0)

    options: dict[str, Any] = {"train_sampling_strategy": "group_by_length"} if grouped else {}
    training_args = Seq2SeqTrainingArguments(
        output_dir=str(work / "trainer"),
        per_device_train_batch_size=args.batch_size,
        learning_rate=LEARNING_RATE,
        weight_decay=0.01,
        lr_scheduler_type="linear",
        max_steps=args.steps + args.warmup_steps,
        save_strategy="no",
        eval_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        **options,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=training_args,
        train_dataset=rows,
        data_collator=collate,
        callbacks=[Tick()],
    )
    trainer.train()
    return clock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100, help="measured steps")
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads, the same for every loop"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # One thread by default: on a busy shared machine more threads than free cores
    # spin against each other and swamp the difference between the loops.
    torch.set_num_threads(args.threads)
    runners: dict[str, Callable[[dict[str, Any], Path], StepClock]] = {
        "ours": lambda p, w: run_ours(p, args, w),
        "seq2seq-trainer": lambda p, w: run_trainer(p, args, w, grouped=False),
        "seq2seq-trainer-grouped": lambda p, w: run_trainer(p, args, w, grouped=True),
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in runners}
    with tempfile.TemporaryDirectory(prefix="s2s-throughput-") as scratch:
        prepared = prepare(
            Path(scratch), n_train=(args.steps + args.warmup_steps + 2) * args.batch_size
        )
        for repeat in range(args.repeats):
            for name, runner in runners.items():
                work = Path(scratch) / f"{name}-{repeat}"
                results[name].append(runner(prepared, work).rate(args.warmup_steps))
    _print_table(results, args)


def _print_table(results: dict[str, list[tuple[float, float]]], args: argparse.Namespace) -> None:
    best = {name: max(runs) for name, runs in results.items()}
    print("| loop | steps/s (best) | real tokens/s (best) | all runs, steps/s |")
    print("|---|---|---|---|")
    for name, runs in results.items():
        shown = ", ".join(f"{steps:.2f}" for steps, _ in runs)
        print(f"| {name} | {best[name][0]:.2f} | {best[name][1]:,.0f} | {shown} |")
    ours = best["ours"][0]
    ratios = ", ".join(
        f"{ours / best[name][0]:.2f}x `{name}`" for name in results if name != "ours"
    )
    print(
        f"\nours runs at {ratios} (steps/s, best runs; batch {args.batch_size}, "
        f"{args.steps} measured steps, {args.threads} thread(s))."
    )


if __name__ == "__main__":
    main()
