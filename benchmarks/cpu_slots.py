"""CPU slots of several ``hpo worker`` processes on one machine: all cores each, or a share.

``python benchmarks/train_throughput.py --cpu-slots 2`` trains the small BERT
of the throughput benchmark in N processes at once, as N one-slot workers
started side by side run N trials: first as before (each supervisor gave its
slot every core: N times the machine's cores in threads), then with the
host-wide split of :mod:`workers.cpu_share` (each process joins one registry
and takes ``cores // N`` threads, the code the slots run). One training alone
is measured too, for reference. Rates are aggregate real tokens per second
over the steady-state steps; runs are interleaved and the best of each kind
kept, since other load on the machine only ever slows a run down.
"""

from __future__ import annotations

import argparse
import datetime
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

SECTION = "## CPU slots of several workers on one machine"


def compare_cpu_slots(args: argparse.Namespace, bench: ModuleType) -> None:
    """Measure, print and (``--write``) record the comparison."""
    n, cores = args.cpu_slots, len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory(prefix="cpu-slots-") as scratch:
        folder = Path(scratch)
        csv_path = bench._write_dataset(
            folder,
            n_rows=bench._rows_needed(args),
            seed=0,
            reviews_per_example=args.reviews_per_example,
        )
        base = bench._cases(args, "cpu", csv_path, folder / "cache")[0]  # small, ours
        # The tokenizer is trained once, before any timing.
        bench.run_together([replace(base, steps=4, warmup_steps=1)])
        kinds: dict[str, list[list[dict[str, Any]]]] = {"alone": [], "all cores": [], "split": []}
        for repeat in range(args.repeats):
            kinds["alone"].append(bench.run_together([replace(base, threads=cores)]))
            kinds["all cores"].append(bench.run_together([replace(base, threads=cores)] * n))
            registry = str(folder / f"registry-{repeat}.json")
            shared = replace(base, cpu_registry=registry, cpu_peers=n)
            kinds["split"].append(bench.run_together([shared] * n))
    table = render(kinds, args, n, cores)
    print(table)
    if args.write:
        bench.write_section(Path(args.write), table, heading=SECTION)


def _aggregate(runs: list[dict[str, Any]]) -> float:
    return float(sum(r["tokens_per_s"] for r in runs))


def render(
    kinds: dict[str, list[list[dict[str, Any]]]], args: argparse.Namespace, n: int, cores: int
) -> str:
    rows, best = [], {}
    labels = {
        "alone": "one training alone (reference)",
        "all cores": f"{n} workers, each slot given every core (before)",
        "split": f"{n} workers, cores split across the machine's slots (now)",
    }
    for kind, repeats in kinds.items():
        top = max(repeats, key=_aggregate)
        best[kind] = _aggregate(top)
        every = ", ".join(f"{_aggregate(r):,.0f}" for r in repeats)
        threads = "+".join(str(r["threads"]) for r in top)
        each = ", ".join(f"{r['tokens_per_s']:,.0f}" for r in top)
        rows.append(
            f"| {labels[kind]} | {len(top)} | {threads} | {best[kind]:,.0f} | {each} | {every} |"
        )
    gain = best["split"] / best["all cores"]
    write = f" --write {args.write}" if args.write else ""
    header = "| setting | trainings | threads | aggregate tokens/s (best) | each | all runs |"
    lines = [
        SECTION,
        "",
        f"Command: `python benchmarks/train_throughput.py --cpu-slots {n} "
        f"--repeats {args.repeats} --steps {args.steps}{write}`  ",
        f"Machine: {cores} CPU cores, no GPU; {n} trainings of the small BERT at once  ",
        f"Date: {datetime.date.today().isoformat()}",
        "",
        "Each training is one process, as the slot of one `hpo worker --devices cpu` is. "
        "Before, each supervisor split the cores among its own slots only, so N workers "
        "side by side gave N times the cores in threads; now every CPU slot on the machine "
        "registers in one host-local registry and takes `cores // live slots` threads "
        "(`workers/cpu_share.py`). Tokens/s are real tokens over the steady-state steps, "
        f"summed over the trainings that ran together; {args.repeats} interleaved runs "
        "of each kind, the best aggregate shown, all listed. Other load on this shared "
        "machine only slows runs down, so compare within the table.",
        "",
        header,
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"- The split runs at {gain:.2f}x the aggregate throughput of every slot taking "
        "every core.",
    ]
    return "\n".join(lines) + "\n"
