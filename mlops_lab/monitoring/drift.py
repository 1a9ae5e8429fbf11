"""Drift statistics, in NumPy only (no SciPy needed).

Numeric features: the population stability index (PSI, on deciles of the reference) and the
two-sample Kolmogorov-Smirnov test. Categorical features: the chi-square test of homogeneity and
the Jensen-Shannon distance (base 2, between 0 and 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DEFAULT_THRESHOLDS = {
    "psi": 0.2,  # >= this: drifted (0.1-0.2 is usually read as a moderate shift)
    "ks_pvalue": 0.01,  # < this and
    "ks_statistic": 0.1,  # >= this: drifted (both, so large samples do not flag trivial shifts)
    "chi2_pvalue": 0.01,
    "js_distance": 0.1,
}


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10, eps: float = 1e-4) -> float:
    """Population stability index of ``live`` against ``reference`` on the reference's quantiles."""
    ref = reference[np.isfinite(reference)]
    cur = live[np.isfinite(live)]
    if len(ref) == 0 or len(cur) == 0:
        return float("nan")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=len(edges) + 1) / len(cur)
    r = np.clip(r, eps, None)
    c = np.clip(c, eps, None)
    return float(np.sum((c - r) * np.log(c / r)))


def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and its asymptotic p-value."""
    a = np.sort(a[np.isfinite(a)])
    b = np.sort(b[np.isfinite(b)])
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return float("nan"), float("nan")
    values = np.concatenate([a, b])
    cdf_a = np.searchsorted(a, values, side="right") / n
    cdf_b = np.searchsorted(b, values, side="right") / m
    d = float(np.max(np.abs(cdf_a - cdf_b)))
    en = math.sqrt(n * m / (n + m))
    return d, _kolmogorov_sf((en + 0.12 + 0.11 / en) * d)


def _kolmogorov_sf(lam: float) -> float:
    if lam < 1e-3:
        return 1.0
    total, sign = 0.0, 1.0
    for k in range(1, 101):
        term = sign * math.exp(-2.0 * k * k * lam * lam)
        total += term
        if abs(term) < 1e-12:
            break
        sign = -sign
    return float(min(1.0, max(0.0, 2.0 * total)))


def chi2_homogeneity(ref_counts: np.ndarray, live_counts: np.ndarray) -> tuple[float, float]:
    """Chi-square test that two samples of categories come from one distribution."""
    table = np.vstack([ref_counts, live_counts]).astype(float)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2:
        return 0.0, 1.0
    expected = table.sum(axis=1, keepdims=True) * table.sum(axis=0, keepdims=True) / table.sum()
    stat = float(np.sum((table - expected) ** 2 / expected))
    dof = table.shape[1] - 1
    return stat, _chi2_sf(stat, dof)


def js_distance(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    p = p_counts / max(p_counts.sum(), 1)
    q = q_counts / max(q_counts.sum(), 1)
    m = (p + q) / 2

    def kl(x, y):
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / y[mask])))

    return math.sqrt(max(0.0, (kl(p, m) + kl(q, m)) / 2))


def _chi2_sf(x: float, dof: int) -> float:
    return _gammaincc(dof / 2.0, x / 2.0)


def _gammaincc(a: float, x: float) -> float:
    """Regularized upper incomplete gamma function Q(a, x)."""
    if x <= 0:
        return 1.0
    lg = math.lgamma(a)
    if x < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        ap = a
        for _ in range(1000):
            ap += 1
            term *= x / ap
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - lg))
    # continued fraction (modified Lentz)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - lg) * h)


@dataclass
class FeatureDrift:
    feature: str
    kind: str
    n_reference: int
    n_live: int
    psi: float | None = None
    ks_statistic: float | None = None
    ks_pvalue: float | None = None
    chi2_pvalue: float | None = None
    js_distance: float | None = None
    drifted: bool = False


def _canonical(values):
    """Categories as text, numbers written one way (``1``, ``1.0`` and ``np.int64(1)`` alike)."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        return values.astype(float).map(lambda v: format(v, "g"))
    return values.astype(str)


def feature_drift(name: str, reference, live, thresholds: dict[str, float]) -> FeatureDrift:
    """Compare one feature's reference and live values (pandas Series)."""
    import pandas as pd

    ref = reference.dropna()
    cur = live.dropna()
    numeric = pd.api.types.is_numeric_dtype(ref) and not pd.api.types.is_bool_dtype(ref) and ref.nunique() > 10
    out = FeatureDrift(name, "numeric" if numeric else "categorical", len(ref), len(cur))
    if len(ref) == 0 or len(cur) == 0:
        return out
    if numeric:
        a = pd.to_numeric(ref, errors="coerce").to_numpy(dtype=float)
        b = pd.to_numeric(cur, errors="coerce").to_numpy(dtype=float)
        out.psi = psi(a, b)
        out.ks_statistic, out.ks_pvalue = ks_2samp(a, b)
        out.drifted = bool(
            out.psi >= thresholds["psi"]
            or (out.ks_pvalue < thresholds["ks_pvalue"] and out.ks_statistic >= thresholds["ks_statistic"])
        )
    else:
        ra, ca = _canonical(ref), _canonical(cur)
        cats = sorted(set(ra.unique()) | set(ca.unique()))
        rc = ra.value_counts().reindex(cats, fill_value=0).to_numpy()
        cc = ca.value_counts().reindex(cats, fill_value=0).to_numpy()
        _, out.chi2_pvalue = chi2_homogeneity(rc, cc)
        out.js_distance = js_distance(rc.astype(float), cc.astype(float))
        out.drifted = bool(out.chi2_pvalue < thresholds["chi2_pvalue"] and out.js_distance >= thresholds["js_distance"]) or bool(
            out.js_distance >= 2 * thresholds["js_distance"]
        )
    return out
