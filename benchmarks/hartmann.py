"""Multi-fidelity Hartmann 3 and 6: objectives with a known optimum and a fidelity.

The published multi-fidelity extension (Kandasamy et al., 2017, as
mf-prior-bench defines its ``mfh3_*`` / ``mfh6_*`` benchmarks): at fidelity
``z`` in ``1..100`` with ``s = log(z) / log(100)``,

    f(x, z) = -sum_i (alpha_i - bias * (1 - s)) * exp(-sum_j A_ij (x_j - P_ij)^2)
              + noise * (1 - s) * |N(0, 1)|

The bias flattens the function at low fidelity and the noise blurs it; both
vanish at ``z = 100``, where ``f`` is the ordinary Hartmann function (minimum
-3.86278 in 3-D, -3.32237 in 6-D). The normal draw comes from numpy's
``default_rng`` seeded with ``|1337 * z * hash(x)|`` as in mf-prior-bench, so
that one point at one fidelity always gets the same value. The correlation
levels are mf-prior-bench's (bias, noise) pairs: how well low fidelities rank
points as the full fidelity does.

Pure numpy: mf-prior-bench's own virtualenv imports it to cross-check
(``python -m benchmarks.hartmann_check``).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

MAX_FIDELITY = 100
NOISE_SEED = 1337

# (bias, noise) of each correlation level, as mf-prior-bench names them.
CORRELATIONS: dict[str, tuple[float, float]] = {
    "good": (2.5, 2.0),
    "moderate": (3.0, 3.0),
    "bad": (3.5, 4.0),
    "terrible": (4.0, 5.0),
}
ALPHA = np.array([1.0, 1.2, 3.0, 3.2])


@dataclass(frozen=True)
class Hartmann:
    """One Hartmann function: its constants and its known minimum."""

    a: np.ndarray
    p: np.ndarray
    minimum: float
    argmin: tuple[float, ...]

    @property
    def dims(self) -> int:
        return int(self.a.shape[1])


HARTMANN3 = Hartmann(
    a=np.array([[3.0, 10, 30], [0.1, 10, 35], [3.0, 10, 30], [0.1, 10, 35]]),
    p=1e-4
    * np.array([[3689, 1170, 2673], [4699, 4387, 7470], [1091, 8732, 5547], [381, 5743, 8828]]),
    minimum=-3.86278,
    argmin=(0.114614, 0.555649, 0.852547),
)
HARTMANN6 = Hartmann(
    a=np.array(
        [
            [10, 3, 17, 3.5, 1.7, 8],
            [0.05, 10, 17, 0.1, 8, 14],
            [3, 3.5, 1.7, 10, 17, 8],
            [17, 8, 0.05, 10, 0.1, 14],
        ]
    ),
    p=1e-4
    * np.array(
        [
            [1312, 1696, 5569, 124, 8283, 5886],
            [2329, 4135, 8307, 3736, 1004, 9991],
            [2348, 1451, 3522, 2883, 3047, 6650],
            [4047, 8828, 8732, 5743, 1091, 381],
        ]
    ),
    minimum=-3.32237,
    argmin=(0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573),
)


@dataclass(frozen=True)
class MultiFidelityFunction:
    """A Hartmann function at one correlation level (``hartmann3-good``...)."""

    name: str
    base: Hartmann
    bias: float
    noise: float

    @property
    def dims(self) -> int:
        return self.base.dims

    def fidelity_share(self, z: int) -> float:
        """``s`` in [0, 1]: 0 at the lowest fidelity, 1 at the full one."""
        if not 1 <= z <= MAX_FIDELITY:
            raise ValueError(f"fidelity must be in 1..{MAX_FIDELITY}, got {z}")
        return math.log(z) / math.log(MAX_FIDELITY)

    def __call__(self, x: tuple[float, ...], z: int = MAX_FIDELITY) -> float:
        """The value at point ``x`` (in the unit cube) and fidelity ``z``."""
        if len(x) != self.dims:
            raise ValueError(f"{self.name} takes {self.dims} coordinates, got {len(x)}")
        share = self.fidelity_share(z)
        point = np.asarray(x, dtype=float)
        inner = np.sum(self.base.a * (point - self.base.p) ** 2, axis=1)
        weights = ALPHA - self.bias * (1.0 - share)
        value = -float(np.sum(weights * np.exp(-inner)))
        return value + self.noise * (1.0 - share) * abs(_normal_draw(tuple(x), z))

    @property
    def minimum(self) -> float:
        return self.base.minimum


def _normal_draw(x: tuple[float, ...], z: int) -> float:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the product may overflow numpy's int64
        seed = abs(NOISE_SEED * z * hash(x))
    return float(np.random.default_rng(seed=seed).normal())


def functions() -> dict[str, MultiFidelityFunction]:
    """Every function by name: ``hartmann{3,6}-{good,moderate,bad,terrible}``."""
    table = {}
    for dims, base in ((3, HARTMANN3), (6, HARTMANN6)):
        for level, (bias, noise) in CORRELATIONS.items():
            name = f"hartmann{dims}-{level}"
            table[name] = MultiFidelityFunction(name, base, bias, noise)
    return table


def get_function(name: str) -> MultiFidelityFunction:
    """The function called ``name``; ``KeyError`` lists the known names."""
    table = functions()
    if name not in table:
        raise KeyError(f"unknown function {name!r}; known: {', '.join(table)}")
    return table[name]


def point_of(params: dict[str, float], dims: int) -> tuple[float, ...]:
    """The point ``(x0, x1, ...)`` from parameters named ``x0``..``x{dims-1}``."""
    return tuple(float(params[f"x{i}"]) for i in range(dims))
