"""Training throughput: our loop against ``transformers.Trainer``.

Both train the same BERT classifier (same config, token ids, batch size,
optimizer and schedule) for the same number of steps. Each measurement runs
in its own process, so that peak memory (RSS, and CUDA memory on a GPU) is
that run's alone. Throughput counts real (non-padding) tokens per second over
the steady-state steps: a timer wrapped around the model's forward notes when
each training step starts and how many tokens it holds, so model building,
the first (warm-up) steps, the final evaluation and saving are not counted,
in either framework.

``transformers.Trainer`` needs the ``accelerate`` package; it is needed for
this benchmark only.

Usage::

    python benchmarks/train_throughput.py                    # small config, print a table
    python benchmarks/train_throughput.py --write benchmarks/RESULTS.md

On CUDA the runs use bf16 autocast (ours always does there; the Trainer gets
``bf16=True``) and a bert-base-sized config is measured as well, with model
FLOPs utilisation (MFU).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import logging
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger("train_throughput")

SECTION = "## Training throughput"
# Dense bf16 peak of common accelerators, FLOP/s (vendor data sheets, no sparsity).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}
SMALL = {"num_layers": 2, "hidden_size": 128, "num_attention_heads": 2, "intermediate_size": 512}
BERT_BASE = {
    "num_layers": 12,
    "hidden_size": 768,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
}


@dataclass(frozen=True)
class Case:
    """One measurement: which loop, which model size, how long."""

    runner: str  # "ours" | "trainer" | "trainer-grouped"
    label: str
    architecture: dict[str, int]
    batch_size: int
    steps: int
    warmup_steps: int
    max_seq_len: int
    data_csv: str
    cache_dir: str
    device: str
    # CPU threads: a fixed count, or (with ``cpu_registry``) the slot's share of the
    # cores among the processes registered there (workers/cpu_share.py).
    threads: int = 0
    cpu_registry: str = ""
    cpu_peers: int = 1


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.case:
        print("RESULT " + json.dumps(measure(Case(**json.loads(args.case)))))
        return
    if args.cpu_slots:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # when run as a script
        from benchmarks.cpu_slots import compare_cpu_slots

        compare_cpu_slots(args, sys.modules[__name__])
        return
    device = args.device if args.device != "auto" else _detect_device()
    with tempfile.TemporaryDirectory(prefix="throughput-") as scratch:
        csv_path = _write_dataset(
            Path(scratch),
            n_rows=_rows_needed(args),
            seed=0,
            reviews_per_example=args.reviews_per_example,
        )
        cases = _cases(args, device, csv_path, Path(scratch) / "cache")
        # Repeats are interleaved so that a slow spell of the machine hits every case.
        runs = [
            run_in_subprocess(case, i) for _ in range(args.repeats) for i, case in enumerate(cases)
        ]
        results = [_best_of([r for r in runs if r["case"] == i]) for i in range(len(cases))]
    table = render_markdown(results, args, device)
    print(table)
    if args.write:
        write_section(Path(args.write), table)


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Training throughput: our loop vs Trainer")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=100, help="measured steps")
    parser.add_argument("--warmup-steps", type=int, default=5, help="steps not measured")
    parser.add_argument("--max-seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5, help="runs per case (fastest kept)")
    parser.add_argument(
        "--reviews-per-example",
        type=int,
        default=4,
        help="generated reviews joined into one example (sets the length)",
    )
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="bf16 peak of the GPU, for MFU (default: known models)",
    )
    parser.add_argument("--write", default=None, help="update this RESULTS.md section")
    parser.add_argument(
        "--cpu-slots",
        type=int,
        default=0,
        help="instead: N CPU trainings at once, as N one-slot hpo workers on this machine "
        "ran them (every core each) against the host-wide split (cores / N each)",
    )
    parser.add_argument("--case", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def _detect_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _rows_needed(args: argparse.Namespace) -> int:
    # One epoch must hold every step (after the 5% validation hold-out).
    return int((args.steps + args.warmup_steps + 2) * args.batch_size / 0.95) + 1


def _write_dataset(folder: Path, *, n_rows: int, seed: int, reviews_per_example: int) -> Path:
    """Builtin sentiment reviews joined into longer examples, as a csv file."""
    import pandas as pd

    from workers.data.sentiment import generate_reviews

    texts, labels = generate_reviews(
        n_rows * reviews_per_example, seed=seed, stream="train", label_noise=0.05
    )
    rows = [
        (" ".join(texts[i : i + reviews_per_example]), labels[i + reviews_per_example - 1])
        for i in range(0, n_rows * reviews_per_example, reviews_per_example)
    ]
    path = folder / "reviews.csv"
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return path


def _cases(args: argparse.Namespace, device: str, csv_path: Path, cache: Path) -> list[Case]:
    def case(runner: str, label: str, architecture: dict[str, int]) -> Case:
        return Case(
            runner=runner,
            label=label,
            architecture=architecture,
            batch_size=args.batch_size,
            steps=args.steps + args.warmup_steps,
            warmup_steps=args.warmup_steps,
            max_seq_len=args.max_seq_len,
            data_csv=str(csv_path),
            cache_dir=str(cache),
            device=device,
        )

    sizes = [("small", SMALL)] + ([("bert-base", BERT_BASE)] if device == "cuda" else [])
    return [
        case(runner, label, arch)
        for label, arch in sizes
        for runner in ("ours", "trainer", "trainer-grouped")
    ]


def _best_of(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The fastest run, with the highest peak memory of all runs.

    Other processes only ever slow a run down, so on a shared machine the
    fastest of several runs is the closest to the code's own speed (the
    reasoning of ``timeit``); all runs are listed next to it.
    """
    best = dict(max(runs, key=lambda r: r["tokens_per_s"]))
    best["all_tokens_per_s"] = [r["tokens_per_s"] for r in runs]
    for key in ("peak_rss_mib", "peak_cuda_mib"):
        if key in best:
            best[key] = max(r[key] for r in runs)
    return best


def run_in_subprocess(case: Case, index: int) -> dict[str, Any]:
    """Measure ``case`` (number ``index``) in a fresh interpreter; return its figures."""
    return run_together([case], index)[0]


def run_together(cases: list[Case], index: int = 0) -> list[dict[str, Any]]:
    """Measure ``cases`` at the same time, each in a fresh interpreter; return their figures."""
    procs = []
    for case in cases:
        logger.info("measuring %s / %s ...", case.label, case.runner)
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        if case.threads or case.cpu_registry:
            for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
                env.pop(name, None)  # the case sets its own
        command = [sys.executable, __file__, "--case", json.dumps(asdict(case))]
        procs.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    return [_result(proc, case, index) for proc, case in zip(procs, cases, strict=True)]


def _result(proc: subprocess.Popen[str], case: Case, index: int) -> dict[str, Any]:
    stdout, stderr = proc.communicate()
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
            return {**result, "case": index}
    raise RuntimeError(f"{case.runner} failed:\n{stderr[-4000:]}")


# --- inside the measuring process ----------------------------------------------------


class StepTimer:
    """Wraps the model class's forward; notes each training step's start and tokens."""

    def __init__(self, model_class: Any, synchronize: Callable[[], None]) -> None:
        # (start time, real tokens, padded tokens, rows) of each training forward
        self.records: list[tuple[float, int, int, int]] = []
        original = model_class.forward
        records = self.records

        # ``wraps`` keeps the signature that the Trainer inspects to pick input columns.
        @functools.wraps(original)
        def forward(model: Any, *args: Any, **kwargs: Any) -> Any:
            if model.training:
                synchronize()  # on CUDA: the time a step really starts
                mask = kwargs["attention_mask"]
                records.append((time.perf_counter(), int(mask.sum()), mask.numel(), mask.shape[0]))
            return original(model, *args, **kwargs)

        model_class.forward = forward

    def summary(self, warmup: int) -> dict[str, float]:
        """Rates over the steps after ``warmup``, each timed from its start to the next's."""
        steady = self.records[warmup:]
        seconds = steady[-1][0] - steady[0][0]
        timed = steady[:-1]
        real, padded = sum(r[1] for r in timed), sum(r[2] for r in timed)
        return {
            "tokens_per_s": real / seconds,
            "padded_tokens_per_s": padded / seconds,
            "padding_share": 1 - real / padded,
            "steps_per_s": len(timed) / seconds,
            "measured_steps": len(timed),
            "mean_width": padded / sum(r[3] for r in timed),
        }


def measure(case: Case) -> dict[str, Any]:
    """Run one case in this process and return its figures."""
    threads = _take_threads(case)
    import torch
    from transformers import BertForSequenceClassification

    cuda = case.device == "cuda"
    timer = StepTimer(
        BertForSequenceClassification, torch.cuda.synchronize if cuda else (lambda: None)
    )
    params_m = (_run_ours if case.runner == "ours" else _run_trainer)(case)
    figures: dict[str, Any] = dict(timer.summary(case.warmup_steps))
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    figures.update(
        runner=case.runner, label=case.label, params_m=params_m, peak_rss_mib=rss_kib / 1024
    )
    figures["threads"] = threads or torch.get_num_threads()
    if cuda:
        figures["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        figures["gpu"] = torch.cuda.get_device_name()
        figures["flops_per_token"] = _training_flops_per_token(case, figures["mean_width"])
    return figures


def _take_threads(case: Case) -> int:
    """Set this process's CPU threads before torch starts; 0 when left to torch."""
    if case.cpu_registry:
        from workers.cpu_share import CpuShare

        share = CpuShare(Path(case.cpu_registry))
        share.join()
        # The slots of both workers are up before either trial starts, as in a fleet.
        deadline = time.monotonic() + 60
        while share.live_slots() < case.cpu_peers and time.monotonic() < deadline:
            time.sleep(0.05)
        return share.apply()
    if case.threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[name] = str(case.threads)
    return case.threads


def _dataset_spec(case: Case) -> Any:
    from storage.tasks.text import FileTextDataset

    return FileTextDataset(source="csv", path=case.data_csv, validation_fraction=0.05)


def _run_ours(case: Case) -> float:
    import optuna

    from storage.tasks import get_declaration
    from storage.tasks.text import ScratchModel, TextClassificationConfig
    from workers.context import TrialContext
    from workers.tasks.text_classification import run

    declaration = get_declaration("text-classification")
    assert declaration is not None
    config = TextClassificationConfig(
        dataset=_dataset_spec(case),
        model=ScratchModel(vocab_size=8000),
        max_epochs=1,
        max_seq_len=case.max_seq_len,
        max_steps=case.steps,
    )
    params = {
        **declaration.defaults(),
        **case.architecture,
        "batch_size": case.batch_size,
        "learning_rate": 5e-4,
        "warmup_ratio": 0.1,
    }
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as work:
        ctx = TrialContext(
            trial=optuna.create_study(direction="maximize").ask(),
            params=params,
            config=config.model_dump(mode="json"),
            objective_metrics=["val_accuracy"],
            seed=0,
            device=case.device,
            work_dir=Path(work),
            cache_dir=Path(case.cache_dir),
            dataset_roots=[Path(case.data_csv).parent],
        )
        return float(run(ctx)["params_m"])


def _run_trainer(case: Case) -> float:
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from workers.data import encode_texts, load_text_data, scratch_tokenizer
    from workers.training.models import scratch_bert_config, trainable_parameters_m

    torch.manual_seed(0)
    data = load_text_data(_dataset_spec(case), [Path(case.data_csv).parent], with_labels=True)
    tokenizer = scratch_tokenizer(
        data.train_texts,
        vocab_size=8000,
        fingerprint=data.fingerprint,
        cache_dir=Path(case.cache_dir),
        max_length=case.max_seq_len,
    )
    ids = encode_texts(tokenizer, data.train_texts, max_length=case.max_seq_len)
    labels = data.train_labels or []
    rows = [{"input_ids": x, "labels": y} for x, y in zip(ids, labels, strict=True)]
    params = {**case.architecture, "hidden_dropout": 0.1, "attention_dropout": 0.1}
    config = scratch_bert_config(
        params,
        vocab_size=len(tokenizer),
        max_seq_len=case.max_seq_len,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    model = AutoModelForSequenceClassification.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation="sdpa"
    )
    cuda = case.device == "cuda"
    with tempfile.TemporaryDirectory() as output:
        arguments = TrainingArguments(
            output_dir=output,
            per_device_train_batch_size=case.batch_size,
            max_steps=case.steps,
            learning_rate=5e-4,
            weight_decay=0.01,
            max_grad_norm=1.0,
            warmup_steps=round(0.1 * case.steps),
            lr_scheduler_type="linear",
            optim="adamw_torch_fused" if cuda else "adamw_torch",
            bf16=cuda,
            tf32=cuda,
            use_cpu=not cuda,
            eval_strategy="no",
            save_strategy="no",
            logging_strategy="no",
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
            seed=0,
            train_sampling_strategy=(
                "group_by_length" if case.runner == "trainer-grouped" else "random"
            ),
        )
        collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=8 if cuda else None)
        Trainer(model=model, args=arguments, train_dataset=rows, data_collator=collator).train()
    return trainable_parameters_m(model)


def _training_flops_per_token(case: Case, width: float) -> float:
    """6N per token for the weights plus the attention's 12 * layers * width * hidden."""
    arch = case.architecture
    hidden, layers = arch["hidden_size"], arch["num_layers"]
    per_layer = 4 * hidden * hidden + 2 * hidden * arch["intermediate_size"]
    return 6 * layers * per_layer + 12 * layers * width * hidden


# --- report --------------------------------------------------------------------------


def render_markdown(results: list[dict[str, Any]], args: argparse.Namespace, device: str) -> str:
    """The RESULTS.md section: command, machine, date, and one row per case."""
    command = "python benchmarks/train_throughput.py " + " ".join(
        shlex.quote(a) for a in sys.argv[1:]
    )
    lines = [
        SECTION,
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {_machine(device, results)}  ",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        f"Examples are {args.reviews_per_example} builtin sentiment reviews joined (cut at "
        f"{args.max_seq_len} tokens). "
        f"Same BERT classifier, token ids, batch size ({args.batch_size}), AdamW and linear "
        f"schedule for each; {args.steps} measured steps after {args.warmup_steps} warm-up "
        f"steps, each case in its own process, {args.repeats} interleaved runs per case "
        "(the fastest shown, all listed; highest peak memory of all). Tokens are real "
        "(non-padding) tokens; "
        '`trainer-grouped` is the Trainer with `train_sampling_strategy="group_by_length"`.',
        "",
    ]
    cuda = device == "cuda"
    header = (
        "| model | loop | params (M) | tokens/s (best) | all runs | steps/s | padding "
        "| peak RSS (MiB) |"
    )
    lines += [
        header + (" peak CUDA (MiB) | MFU |" if cuda else ""),
        "|---" * (10 if cuda else 8) + "|",
    ]
    for r in results:
        every = ", ".join(f"{v:,.0f}" for v in r["all_tokens_per_s"])
        row = (
            f"| {r['label']} | {r['runner']} | {r['params_m']:.2f} | {r['tokens_per_s']:,.0f} "
            f"| {every} | {r['steps_per_s']:.2f} | {r['padding_share']:.0%} "
            f"| {r['peak_rss_mib']:,.0f} |"
        )
        if cuda:
            row += f" {r['peak_cuda_mib']:,.0f} | {_mfu(r, args.peak_tflops)} |"
        lines.append(row)
    return "\n".join([*lines, "", *_ratios(results)]) + "\n"


def _ratios(results: list[dict[str, Any]]) -> list[str]:
    """One line per model size: our best tokens/s over each Trainer variant's."""
    lines = []
    for label in dict.fromkeys(r["label"] for r in results):
        rate = {r["runner"]: r["tokens_per_s"] for r in results if r["label"] == label}
        others = ", ".join(
            f"{rate['ours'] / rate[runner]:.2f}x `{runner}`" for runner in rate if runner != "ours"
        )
        arch = SMALL if label == "small" else BERT_BASE
        shape = (
            f"{arch['num_layers']} layers, hidden {arch['hidden_size']}, "
            f"{arch['num_attention_heads']} heads, FFN {arch['intermediate_size']}"
        )
        lines.append(f"- {label} ({shape}): ours runs at {others} (best runs compared).")
    return lines


def _machine(device: str, results: list[dict[str, Any]]) -> str:
    import torch
    import transformers

    cores = os.cpu_count()
    versions = f"torch {torch.__version__}, transformers {transformers.__version__}"
    if device == "cuda":
        return f"{results[0].get('gpu', 'CUDA GPU')}, {cores} CPU cores, bf16 autocast; {versions}"
    cpu = platform.processor() or platform.machine()
    return f"{cores} CPU cores, no GPU ({cpu}), fp32; {versions}"


def _mfu(result: dict[str, Any], peak_tflops: float | None) -> str:
    peak = (
        peak_tflops * 1e12
        if peak_tflops
        else next(
            (flops for name, flops in PEAK_BF16_FLOPS.items() if name in result.get("gpu", "")),
            None,
        )
    )
    if peak is None:
        return "n/a (pass --peak-tflops)"
    return f"{result['tokens_per_s'] * result['flops_per_token'] / peak:.1%}"


def write_section(path: Path, section: str, heading: str = SECTION) -> None:
    """Replace (or append) this benchmark's section of ``path``; keep the others."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.strip() == heading), None)
    if start is None:
        updated = text.rstrip("\n") + "\n\n" + section
    else:
        end = next(
            (i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines)
        )
        tail = "".join(lines[end:])
        updated = "".join(lines[:start]) + section + ("\n" + tail if tail else "")
    path.write_text(updated)


if __name__ == "__main__":
    main()
