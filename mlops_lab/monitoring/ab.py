"""The statistics of an A/B readout: a proportion's Wilson interval, the two-proportion z-test,
a bootstrap for any other metric, and how many more labelled rows a difference needs.

Plain Python and NumPy (the normal distribution from :class:`statistics.NormalDist`), checked
against SciPy in the tests; SciPy is not needed at run time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

_N = NormalDist()


@dataclass(frozen=True)
class TestResult:
    """A comparison of version B against version A: B's metric minus A's, its confidence
    interval, the statistic and the two-sided p-value."""

    method: str
    difference: float
    ci_low: float
    ci_high: float
    statistic: float | None
    p_value: float
    #: of the difference (unpooled; for the bootstrap, the resampled differences' spread)
    standard_error: float


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of ``k`` successes in ``n`` trials (as SciPy's
    ``binomtest(k, n).proportion_ci(method="wilson")``)."""
    if n == 0:
        return (0.0, 1.0)
    z = _N.inv_cdf(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def two_proportions(k_a: int, n_a: int, k_b: int, n_b: int, confidence: float = 0.95) -> TestResult:
    """The pooled two-proportion z-test of B's rate against A's (its p-value is that of the
    chi-squared test of the 2x2 table without continuity correction), with the unpooled (Wald)
    interval of the difference."""
    p_a, p_b = k_a / n_a, k_b / n_b
    pooled = (k_a + k_b) / (n_a + n_b)
    se0 = math.sqrt(pooled * (1 - pooled) * (1 / n_a + 1 / n_b))
    diff = p_b - p_a
    if se0 == 0:
        z, p_value = 0.0, 1.0
    else:
        z = diff / se0
        p_value = 2 * (1 - _N.cdf(abs(z)))
    se = math.sqrt(p_a * (1 - p_a) / n_a + p_b * (1 - p_b) / n_b)
    q = _N.inv_cdf(0.5 + confidence / 2)
    return TestResult("two-proportion z-test", diff, diff - q * se, diff + q * se, z, p_value, se)


def bootstrap_difference(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                         metric: Callable[[np.ndarray, np.ndarray], float], confidence: float = 0.95,
                         resamples: int = 2000, seed: int = 0) -> TestResult:
    """``metric(y_true, y_pred)`` of B minus A, with a percentile bootstrap interval (each
    version's rows resampled on their own) and the two-sided p-value of "no difference": twice
    the share of resampled differences on the far side of zero (at least ``2 / (resamples + 1)``)."""
    rng = np.random.default_rng(seed)
    (ya, pa), (yb, pb) = a, b
    diffs = np.empty(resamples)
    for i in range(resamples):
        ia = rng.integers(0, len(ya), len(ya))
        ib = rng.integers(0, len(yb), len(yb))
        diffs[i] = metric(yb[ib], pb[ib]) - metric(ya[ia], pa[ia])
    diff = metric(yb, pb) - metric(ya, pa)
    lo, hi = np.quantile(diffs, [(1 - confidence) / 2, (1 + confidence) / 2])
    far = int(np.sum(diffs <= 0)) if diff > 0 else int(np.sum(diffs >= 0))
    # (count + 1) / (resamples + 1): never 0, as no finite number of resamples can show p = 0
    return TestResult("bootstrap", float(diff), float(lo), float(hi), None,
                      float(min(1.0, 2 * (far + 1) / (resamples + 1))), float(np.std(diffs, ddof=1)))


def bootstrap_interval(y: np.ndarray, p: np.ndarray, metric: Callable[[np.ndarray, np.ndarray], float],
                       confidence: float = 0.95, resamples: int = 2000, seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of ``metric(y, p)`` over the rows."""
    rng = np.random.default_rng(seed)
    values = np.empty(resamples)
    for i in range(resamples):
        idx = rng.integers(0, len(y), len(y))
        values[i] = metric(y[idx], p[idx])
    lo, hi = np.quantile(values, [(1 - confidence) / 2, (1 + confidence) / 2])
    return float(lo), float(hi)


def z(p: float) -> float:
    """The standard normal quantile of ``p``."""
    return _N.inv_cdf(p)


def rows_needed(p_a: float, p_b: float, level: float = 0.05, power: float = 0.8) -> int | None:
    """Labelled rows per version for the two-proportion test to find a true difference of
    ``p_b - p_a`` with this ``power`` at this ``level``; None when the rates are equal."""
    if p_a == p_b:
        return None
    za, zb = _N.inv_cdf(1 - level / 2), _N.inv_cdf(power)
    bar = (p_a + p_b) / 2
    n = (za * math.sqrt(2 * bar * (1 - bar)) + zb * math.sqrt(p_a * (1 - p_a) + p_b * (1 - p_b))) ** 2 / (p_a - p_b) ** 2
    return int(math.ceil(n))


METRICS: dict[str, tuple[Callable[[np.ndarray, np.ndarray], float], bool]] = {
    # name -> (metric(y_true, y_pred), higher is better)
    "mae": (lambda y, p: float(np.mean(np.abs(y - p))), False),
    "rmse": (lambda y, p: float(np.sqrt(np.mean((y - p) ** 2))), False),
}
