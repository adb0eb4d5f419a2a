"""Figures of the multi-fidelity benchmark: regret against budget, tables, paired tests.

Input: ``runs[function][setting][seed]`` = ``[(spent, best so far), ...]`` in
order of spending (training examples = fidelity epochs), from the service's
studies and from Syne Tune's reference runs alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from pathlib import Path

from benchmarks.hartmann import get_function

Points = Sequence[Sequence[float]]
Runs = dict[str, dict[str, dict[str, Points]]]
BASELINE = "random"
REFERENCES = ("syne-tune asha", "syne-tune bohb")
OUTSIDE = (*REFERENCES, "dehb")


def best_at(points: Points, spent: float) -> float:
    """The best value found with at most ``spent`` examples (inf before any)."""
    best = math.inf
    for at, value in points:
        if at > spent:
            break
        best = min(best, value)
    return best


def first_reaching(points: Points, target: float, budget: float) -> float | None:
    """The share of ``budget`` at which the best first reaches ``target``; None if never."""
    for at, value in points:
        if at > budget:
            return None
        if value <= target:
            return at / budget
    return None


def mean_sd(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "-"
    missing = len(values) - len(finite)
    sd = statistics.stdev(finite) if len(finite) > 1 else 0.0
    return f"{statistics.mean(finite):.3f} ± {sd:.3f}" + (f" ({missing} none)" if missing else "")


def paired_p(ours: Sequence[float], theirs: Sequence[float]) -> str:
    """Two-sided Wilcoxon signed-rank p on paired final regrets ('-' when undefined)."""
    from scipy.stats import wilcoxon

    pairs = [(a, b) for a, b in zip(ours, theirs, strict=True) if a != b]
    if len(pairs) < 2:
        return "-"
    capped = [(min(a, 10.0), min(b, 10.0)) for a, b in pairs]
    result = wilcoxon([a for a, _ in capped], [b for _, b in capped])
    sign = "<" if statistics.median(a - b for a, b in capped) < 0 else ">"
    return f"{result.pvalue:.2g} ({sign})"


def final_regrets(runs: dict[str, Points], minimum: float, budget: float) -> dict[str, float]:
    return {seed: best_at(points, budget) - minimum for seed, points in runs.items()}


def function_table(function: str, settings: dict[str, dict[str, Points]], budget: float) -> str:
    """The Markdown rows of one function: one per setting."""
    minimum = get_function(function).minimum
    regrets = {name: final_regrets(runs, minimum, budget) for name, runs in settings.items()}
    base = settings.get(BASELINE, {})
    rows = []
    for name, runs in settings.items():
        seeds = sorted(runs)
        shares = []
        for seed in seeds:
            target = best_at(base[seed], budget) if seed in base else math.inf
            shares.append(first_reaching(runs[seed], target, budget))
        reached = [s for s in shares if s is not None]
        share = f"{statistics.mean(reached):.2f}" if reached else "-"
        tests = []
        for other in (BASELINE, *REFERENCES):
            theirs = regrets.get(other, {})
            common = [s for s in seeds if s in theirs]
            tests.append(
                "-" if other == name or not common
                else paired_p([regrets[name][s] for s in common], [theirs[s] for s in common])
            )  # fmt: skip
        rows.append(
            f"| {function} | {name} | {len(seeds)} | {mean_sd(list(regrets[name].values()))} | "
            f"{share} | {len(shares) - len(reached)} | {' | '.join(tests)} |"
        )
    return "\n".join(rows)


def pooled_table(runs: Runs, budget: float) -> str:
    """Per setting over every (function, seed): mean regret, reach share, paired tests."""
    regrets: dict[str, dict[tuple[str, str], float]] = {}
    shares: dict[str, list[float | None]] = {}
    for function, settings in runs.items():
        minimum = get_function(function).minimum
        base = settings.get(BASELINE, {})
        for name, by_seed in settings.items():
            for seed, points in by_seed.items():
                regrets.setdefault(name, {})[(function, seed)] = best_at(points, budget) - minimum
                target = best_at(base[seed], budget) if seed in base else math.inf
                shares.setdefault(name, []).append(first_reaching(points, target, budget))
    rows = [
        "| setting | runs | final simple regret (mean ± sd) | share to reach random's final "
        f"best (mean where reached) | not reached | p vs {BASELINE} | p vs {REFERENCES[0]} | "
        f"p vs {REFERENCES[1]} |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, ours in regrets.items():
        reached = [s for s in shares[name] if s is not None]
        tests = []
        for other in (BASELINE, *REFERENCES):
            common = [k for k in ours if k in regrets.get(other, {})]
            tests.append(
                "-" if other == name or not common
                else paired_p([ours[k] for k in common], [regrets[other][k] for k in common])
            )  # fmt: skip
        share = f"{statistics.mean(reached):.2f}" if reached else "-"
        rows.append(
            f"| {name} | {len(ours)} | {mean_sd(list(ours.values()))} | {share} | "
            f"{len(shares[name]) - len(reached)} | {' | '.join(tests)} |"
        )
    return "\n".join(rows)


def markdown(runs: Runs, budget: float) -> str:
    """The results tables for RESULTS.md: per function, then pooled over functions."""
    header = (
        "| function | setting | seeds | final simple regret (mean ± sd) | "
        "share of budget to reach random's final best (mean where reached) | not reached | "
        f"p vs {BASELINE} | p vs {REFERENCES[0]} | p vs {REFERENCES[1]} |\n"
        "|---|---|---|---|---|---|---|---|---|"
    )
    body = [function_table(f, settings, budget) for f, settings in runs.items()]
    return "\n".join([header, *body, "", pooled_table(runs, budget)])


def plot(function: str, settings: dict[str, dict[str, Points]], budget: float, path: Path) -> None:
    """Mean simple regret (log scale) against the share of budget, with min-max bands."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minimum = get_function(function).minimum
    grid = [budget * i / 60 for i in range(1, 61)]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=80)
    for name, runs in settings.items():
        curves = [[best_at(points, x) - minimum for x in grid] for points in runs.values()]
        xs, means, lows, highs = [], [], [], []
        for i, x in enumerate(grid):
            column = [c[i] for c in curves]
            if all(math.isfinite(v) for v in column):
                xs.append(x / budget)
                means.append(max(statistics.mean(column), 1e-6))
                lows.append(max(min(column), 1e-6))
                highs.append(max(column))
        style = "--" if name in OUTSIDE else "-"
        (line,) = ax.plot(xs, means, style, label=name)
        ax.fill_between(xs, lows, highs, alpha=0.12, color=line.get_color())
    ax.set_yscale("log")
    ax.set_xlabel(f"share of the budget ({budget:.0f} fidelity epochs)")
    ax.set_ylabel("simple regret (best - optimum)")
    ax.set_title(f"{function}: mean over seeds, band = min..max")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
