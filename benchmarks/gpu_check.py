"""The GPU check: bf16 BERT-base fine-tuning in our loop on one CUDA device.

Run by ``benchmarks/gpu_check.sh`` (which prepares the environment). It measures,
each case in its own process:

1. tokens/s and MFU of our loop against ``transformers.Trainer`` on the same
   model, batch and token ids (the throughput benchmark's cases);
2. SDPA against eager attention, and ``torch.compile`` on and off, in our loop;
3. 1 against N trials packed on the device (aggregate tokens/s), each
   admitted through the device's memory ledger with its estimated peak, and the
   estimate against the measured peak;
4. a forced out-of-memory run, which must end as FAIL with reason ``oom``.

The model is BERT-base built from a config (random weights, nothing is
downloaded); the token ids come from the builtin sentiment data and a
byte-level BPE tokenizer trained on it. ``--cpu-smoke`` runs the same code paths
with a tiny model on the CPU (no MFU, no OOM) to check the script itself.
Figures are printed and written to ``OUT/gpu_check.json`` and ``OUT/gpu_check.md``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # when run as a script

from benchmarks import train_throughput as tt

logger = logging.getLogger("gpu_check")
TINY = {"num_layers": 2, "hidden_size": 64, "num_attention_heads": 2, "intermediate_size": 128}


@dataclass(frozen=True)
class LoopCase:
    """One run of our loop on a fixed batch shape."""

    label: str
    architecture: dict[str, int]
    batch_size: int
    seq_len: int
    steps: int
    warmup_steps: int
    device: str
    attention: str = "sdpa"
    compile: bool = False
    ledger: str = ""  # packed: the device's memory ledger
    budget: int = 0


def main() -> None:
    args = _parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.measure:
        print("RESULT " + json.dumps(measure_loop(LoopCase(**json.loads(args.measure)))))
        return
    started = time.monotonic()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    smoke = args.cpu_smoke
    device = "cpu" if smoke else "cuda"
    arch = TINY if smoke else tt.BERT_BASE
    base = LoopCase(
        label="tiny" if smoke else "bert-base",
        architecture=arch,
        batch_size=8 if smoke else args.batch_size,
        seq_len=32 if smoke else args.seq_len,
        steps=8 if smoke else args.steps,
        warmup_steps=2 if smoke else 5,
        device=device,
    )
    sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
        ("loop_vs_trainer", lambda: loop_vs_trainer(base, args, out)),
        ("attention_and_compile", lambda: attention_and_compile(base, smoke)),
        ("packing", lambda: packing(base, args.packed, out)),
        ("oom", lambda: forced_oom(base, smoke)),
    ]
    results: dict[str, Any] = {"device": _device_name(device), "mode": device}
    report = _write(out, results, args.peak_tflops)
    for name, run in sections:
        if args.only and name not in args.only:
            continue
        if time.monotonic() - started > args.budget_s:
            results[name] = {"skipped": f"past the {args.budget_s:.0f} s budget"}
            continue
        logger.info("== %s", name)
        try:
            results[name] = run()
        except Exception as exc:  # one failed section must not hide the others' figures
            logger.exception("%s failed", name)
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
        # Written after every section: a run cut short keeps what it measured.
        results["wall_s"] = round(time.monotonic() - started, 1)
        report = _write(out, results, args.peak_tflops)
    print(report)


def _write(out: Path, results: dict[str, Any], peak_tflops: float | None) -> str:
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2))
    report = render(results, peak_tflops)
    (out / "gpu_check.md").write_text(report)
    return report


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model on the CPU")
    parser.add_argument("--out", default="gpu-check-results")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--steps", type=int, default=40, help="measured steps per case")
    parser.add_argument("--packed", type=int, default=4, help="trials packed on the device")
    parser.add_argument("--budget-s", type=float, default=360.0, help="skip sections after this")
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--only", nargs="*", default=None, help="run only these sections")
    parser.add_argument("--measure", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


def _device_name(device: str) -> str:
    import torch

    if device == "cuda" and torch.cuda.is_available():
        return str(torch.cuda.get_device_name())
    return f"cpu ({os.cpu_count()} cores)"


# --- sections (in the driver) ----------------------------------------------------


def loop_vs_trainer(base: LoopCase, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The throughput benchmark's cases: our task loop and the Trainer, same model and batch."""
    import importlib.util

    if importlib.util.find_spec("accelerate") is None:
        return {"skipped": "transformers.Trainer needs the accelerate package"}
    steps = base.steps + base.warmup_steps
    options = argparse.Namespace(
        batch_size=base.batch_size,
        steps=base.steps,
        warmup_steps=base.warmup_steps,
        max_seq_len=base.seq_len,
        reviews_per_example=8,
    )
    with tempfile.TemporaryDirectory(prefix="gpu-check-", dir=out) as scratch:
        csv_path = tt._write_dataset(
            Path(scratch), n_rows=tt._rows_needed(options), seed=0, reviews_per_example=8
        )
        rows = []
        for runner in ("ours", "trainer"):
            case = tt.Case(
                runner=runner,
                label=base.label,
                architecture=base.architecture,
                batch_size=base.batch_size,
                steps=steps,
                warmup_steps=base.warmup_steps,
                max_seq_len=base.seq_len,
                data_csv=str(csv_path),
                cache_dir=str(Path(scratch) / "cache"),
                device=base.device,
            )
            result = tt.run_in_subprocess(case, 0)
            result["mfu"] = tt._mfu(result, args.peak_tflops) if base.device == "cuda" else "n/a"
            rows.append(result)
    keys = ("runner", "tokens_per_s", "padding_share", "peak_cuda_mib", "peak_rss_mib", "mfu")
    return {"runs": [{k: r.get(k) for k in keys} for r in rows]}


def attention_and_compile(base: LoopCase, smoke: bool) -> dict[str, Any]:
    cases = [
        replace(base, label="sdpa"),
        replace(base, label="eager", attention="eager"),
        replace(base, label="sdpa + compile", compile=True, warmup_steps=base.warmup_steps + 5),
    ]
    runs = [run_case(case) for case in cases]
    if smoke:
        # compile is ignored off CUDA (the loop says so); the case still runs end to end.
        runs[-1]["note"] = "compile only applies on CUDA"
    return {"runs": runs}


def packing(base: LoopCase, n: int, out: Path) -> dict[str, Any]:
    """One trial alone, then ``n`` at once, each admitted through the device's ledger."""
    from workers.packing import packing_budget, probe_free_bytes

    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    free = probe_free_bytes(base.device, visible, None)
    budget = packing_budget(base.device, free, n)
    figures: dict[str, Any] = {"free_mib": free / 2**20, "budget_mib": budget / 2**20}
    for count in (1, n):
        ledger = str(out / f"ledger-{count}.json")
        cases = [
            replace(base, label=f"packed {i + 1} of {count}", ledger=ledger, budget=budget)
            for i in range(count)
        ]
        runs = run_together(cases)
        figures[f"{count}_packed"] = {
            "aggregate_tokens_per_s": sum(r["tokens_per_s"] for r in runs),
            "runs": runs,
        }
    one, many = figures["1_packed"], figures[f"{n}_packed"]
    figures["speedup"] = many["aggregate_tokens_per_s"] / one["aggregate_tokens_per_s"]
    return figures


def forced_oom(base: LoopCase, smoke: bool) -> dict[str, Any]:
    if smoke:
        return {"skipped": "a real out-of-memory needs CUDA; tests cover the mapping on CPU"}
    huge = replace(base, label="oom", batch_size=4096, seq_len=512, steps=2, warmup_steps=1)
    return run_case(huge)


def run_case(case: LoopCase) -> dict[str, Any]:
    return run_together([case])[0]


def run_together(cases: list[LoopCase]) -> list[dict[str, Any]]:
    """Run ``cases`` at the same time, each in a fresh interpreter; return their figures."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    procs = []
    for case in cases:
        logger.info("measuring %s ...", case.label)
        command = [sys.executable, __file__, "--measure", json.dumps(asdict(case))]
        procs.append(
            subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
        )
    results = []
    for proc, case in zip(procs, cases, strict=True):
        stdout, stderr = proc.communicate()
        line = next((x for x in stdout.splitlines() if x.startswith("RESULT ")), None)
        if line is None:
            raise RuntimeError(f"{case.label} failed:\n{stderr[-3000:]}")
        results.append(json.loads(line.removeprefix("RESULT ")))
    return results


# --- one case (in its own process) -------------------------------------------------


def measure_loop(case: LoopCase) -> dict[str, Any]:
    """Train ``case`` with :func:`workers.training.loop.train`; return its figures."""
    from workers.outcome import run_task

    timed = _timed_context(case)
    job, settings = _job(case, timed)
    if case.ledger:
        from workers.packing import MemoryLedger

        ledger = MemoryLedger(Path(case.ledger), case.budget)
        admitted: dict[str, float] = {}

        def reserve(nbytes: int) -> None:
            waited = ledger.reserve(nbytes)
            admitted.setdefault("waited_s", waited)
            admitted.setdefault("estimate_mib", nbytes / 2**20)

        timed.reserve_device_memory = reserve
    from workers.training.loop import train

    result = run_task(lambda: train(job, settings, timed), ["val_loss"])
    figures: dict[str, Any] = {
        "label": case.label,
        "state": result.outcome.state,
        "fail_reason": result.outcome.fail_reason,
    }
    if result.outcome.state != "COMPLETE":
        figures["error"] = (result.outcome.error or "")[:300]
        return figures
    figures.update(_rates(case, timed.records))
    figures.update(_memory(case, job, settings))
    if case.ledger:
        figures.update(admitted)
        ledger.release()
    return figures


def _timed_context(case: LoopCase) -> Any:
    """A trial context that notes when each micro-batch starts (the loop counts examples)."""
    import optuna
    import torch

    from workers.context import TrialContext

    class TimedContext(TrialContext):
        records: list[float]

        def count_examples(self, n: int) -> None:
            if case.device == "cuda":
                torch.cuda.synchronize()
            self.records.append(time.perf_counter())
            super().count_examples(n)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = Path(tempfile.mkdtemp(prefix="gpu-check-trial-"))
    ctx = TimedContext(
        trial=optuna.create_study().ask(),
        params={},
        config={},
        objective_metrics=["val_loss"],
        seed=0,
        device=case.device,
        work_dir=work,
        cache_dir=work / "cache",
        dataset_roots=[work],
    )
    ctx.records = []
    return ctx


def _job(case: LoopCase, ctx: Any) -> tuple[Any, Any]:
    import torch
    import torch.nn.functional as F  # noqa: N812
    from transformers import AutoModelForSequenceClassification

    from workers.data import scratch_tokenizer
    from workers.data.sentiment import generate_reviews
    from workers.training import TrainingJob, TrainSettings, seed_everything
    from workers.training.models import scratch_bert_config

    seed_everything(0)
    texts, _ = generate_reviews(400, seed=0, stream="train", label_noise=0.0)
    tokenizer = scratch_tokenizer(
        texts, vocab_size=8000, fingerprint="gpu-check", cache_dir=ctx.cache_dir, max_length=512
    )
    params = {**case.architecture, "hidden_dropout": 0.1, "attention_dropout": 0.1}
    config = scratch_bert_config(
        params,
        vocab_size=len(tokenizer),
        max_seq_len=max(512, case.seq_len),
        pad_token_id=tokenizer.pad_token_id,
        num_labels=2,
    )
    model = AutoModelForSequenceClassification.from_config(  # type: ignore[no-untyped-call]
        config, attn_implementation=case.attention
    )
    n = case.batch_size * (case.steps + case.warmup_steps)
    ids = torch.randint(5, len(tokenizer), (n, case.seq_len))
    labels = torch.randint(0, 2, (n,))

    def collate(indices: list[int]) -> dict[str, torch.Tensor]:
        rows = torch.tensor(indices)
        mask = torch.ones(len(indices), case.seq_len, dtype=torch.long)
        return {"input_ids": ids[rows], "attention_mask": mask, "labels": labels[rows]}

    def compute_loss(forward: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = forward(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return F.cross_entropy(logits.logits.float(), batch["labels"])

    def evaluate(forward: Any) -> dict[str, float]:
        batch = {k: v.to(case.device) for k, v in collate(list(range(case.batch_size))).items()}
        return {"val_loss": float(compute_loss(forward, batch))}

    job = TrainingJob(model, tokenizer, [case.seq_len] * n, collate, compute_loss, evaluate)
    settings = TrainSettings(
        learning_rate=5e-5,
        batch_size=case.batch_size,
        max_epochs=1,
        seed=0,
        device=case.device,
        max_steps=case.steps + case.warmup_steps,
        compile=case.compile,
        warmup_ratio=0.1,
    )
    return job, settings


def _rates(case: LoopCase, records: list[float]) -> dict[str, float]:
    steady = records[case.warmup_steps :]
    seconds = steady[-1] - steady[0]
    tokens = (len(steady) - 1) * case.batch_size * case.seq_len
    flops = tt._training_flops_per_token(
        tt.Case("ours", case.label, case.architecture, 0, 0, 0, case.seq_len, "", "", ""),
        case.seq_len,
    )
    return {"tokens_per_s": tokens / seconds, "flops_per_token": flops}


def _memory(case: LoopCase, job: Any, settings: Any) -> dict[str, float]:
    import torch

    from workers.training.memory import estimate_training_bytes

    figures = {"estimate_mib": estimate_training_bytes(job.model, settings, case.seq_len) / 2**20}
    if case.device == "cuda":
        figures["peak_allocated_mib"] = torch.cuda.max_memory_allocated() / 2**20
        figures["peak_reserved_mib"] = torch.cuda.max_memory_reserved() / 2**20
    return figures


# --- report --------------------------------------------------------------------------


def render(results: dict[str, Any], peak_tflops: float | None) -> str:
    """The figures as markdown: one line per run, sections in order."""
    peak = peak_tflops * 1e12 if peak_tflops else None
    peak = peak or next(
        (f for name, f in tt.PEAK_BF16_FLOPS.items() if name in results["device"]), None
    )
    lines = [f"# GPU check on {results['device']} ({results.get('wall_s')} s)", ""]
    for name in ("loop_vs_trainer", "attention_and_compile", "packing", "oom"):
        if name not in results:
            continue
        section = results[name]
        lines += [f"## {name}", ""]
        runs = list(section.get("runs", []))
        if name == "packing" and "speedup" in section:
            counts = sorted(int(k.split("_")[0]) for k in section if k.endswith("_packed"))
            for count in counts:
                rate = section[f"{count}_packed"]["aggregate_tokens_per_s"]
                lines.append(f"- {count} packed: {rate:,.0f} tokens/s aggregate")
            lines.append(
                f"- {counts[-1]} packed run at {section['speedup']:.2f}x one alone; budget "
                f"{section['budget_mib']:,.0f} MiB of {section['free_mib']:,.0f} MiB free"
            )
            runs = section[f"{counts[-1]}_packed"]["runs"]
        elif not runs:
            runs = [section]
        for run in runs:
            lines.append(f"- {json.dumps(_with_mfu(run, peak))}")
        lines.append("")
    return "\n".join(lines)


def _with_mfu(run: dict[str, Any], peak: float | None) -> dict[str, Any]:
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in run.items()}
    flops = shown.pop("flops_per_token", None)
    if "mfu" not in shown and peak and flops and run.get("tokens_per_s"):
        shown["mfu"] = f"{run['tokens_per_s'] * flops / peak:.1%}"
    return shown


if __name__ == "__main__":
    main()
