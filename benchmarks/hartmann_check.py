"""Cross-check benchmarks/hartmann.py against mf-prior-bench itself.

Run with a virtualenv that has ``mf-prior-bench`` (not the product's):

    .venv-mfpb/bin/python -m benchmarks.hartmann_check

It queries every ``mfh{3,6}_{level}`` benchmark at random points (and the
optimum) at several fidelities, compares with this repository's functions and
prints the largest absolute difference; it exits 1 above ``1e-9``.
"""

from __future__ import annotations

import random
import sys
from typing import Any

from benchmarks.hartmann import CORRELATIONS, MAX_FIDELITY, functions

FIDELITIES = (1, 2, 5, 10, 33, 50, 99, MAX_FIDELITY)
TOLERANCE = 1e-9


def compare(points_per_function: int = 8) -> float:
    """The largest |ours - mf-prior-bench| over the functions, points and fidelities."""
    import mfpbench

    rng = random.Random(0)
    worst = 0.0
    for name, function in functions().items():
        dims, level = function.dims, name.split("-")[1]
        assert level in CORRELATIONS
        bench: Any = mfpbench.get(f"mfh{dims}_{level}")
        points = [function.base.argmin] + [
            tuple(rng.random() for _ in range(dims)) for _ in range(points_per_function)
        ]
        for point in points:
            config = {f"X_{i}": v for i, v in enumerate(point)}
            for z in FIDELITIES:
                theirs = float(bench.query(config, at=z).value.value)
                worst = max(worst, abs(function(point, z) - theirs))
        print(f"{name}: max |difference| so far {worst:.3g}", flush=True)
    return worst


def main() -> None:
    worst = compare()
    print(f"max |ours - mf-prior-bench| over all functions, points and fidelities: {worst:.3g}")
    sys.exit(0 if worst <= TOLERANCE else 1)


if __name__ == "__main__":
    main()
