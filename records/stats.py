"""The statistics of a record claim (scipy.stats underneath).

n runs x_1..x_n, mean m = Σx/n, sample standard deviation s = sqrt(Σ(x−m)²/(n−1)).
- Target test (the public speedrun's rule): one-sided one-sample t-test of H0 "mean val loss ≥ target",
  t = (m − target)/(s/√n) with n−1 degrees of freedom, p = P(T ≤ t); a record needs p < 0.01.
- 95% confidence interval of a mean: m ± t_{0.975, n−1} · s/√n.
- Welch's t-test of two samples: t = (m_a − m_b)/√(s_a²/n_a + s_b²/n_b), two-sided.
- Ratio of mean times r = m_a/m_b with a 95% interval by the delta method on log r:
  se² = s_a²/(n_a m_a²) + s_b²/(n_b m_b²), Welch–Satterthwaite degrees of freedom
  ν = se⁴ / [(s_a²/(n_a m_a²))²/(n_a−1) + (s_b²/(n_b m_b²))²/(n_b−1)], interval r·exp(±t_{0.975,ν}·se).
Statistics that need two or more runs are None with fewer.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats


def mean_std(values) -> dict:
    """{"mean": m, "std": s} (s with n−1 in the denominator; None for one value)."""
    x = np.asarray(values, dtype=float)
    return {"mean": float(x.mean()), "std": float(x.std(ddof=1)) if len(x) > 1 else None}


def ci95(values) -> list[float] | None:
    """[m − h, m + h] with h = t_{0.975, n−1} · s/√n; None for fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return None
    h = stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return [float(x.mean() - h), float(x.mean() + h)]


def p_below(values, target: float) -> float | None:
    """p of the one-sided one-sample t-test that the mean is below `target` (None below two values)."""
    if len(values) < 2:
        return None
    with warnings.catch_warnings():  # identical values: t = ±inf, which scipy warns about but handles
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_1samp(np.asarray(values, dtype=float), target, alternative="less").pvalue
    return None if math.isnan(p) else float(p)


def welch_p(a, b) -> float | None:
    """Two-sided p of Welch's unequal-variance t-test (None unless both samples have two values)."""
    if len(a) < 2 or len(b) < 2:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = stats.ttest_ind(np.asarray(a, float), np.asarray(b, float), equal_var=False).pvalue
    return None if math.isnan(p) else float(p)


def ratio_ci95(a, b) -> dict:
    """{"ratio": m_a/m_b, "ci95": [lo, hi] or None} by the delta method on the log ratio (module docstring)."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    ratio = float(a.mean() / b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"ratio": ratio, "ci95": None}
    va = a.var(ddof=1) / (len(a) * a.mean() ** 2)
    vb = b.var(ddof=1) / (len(b) * b.mean() ** 2)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"ratio": ratio, "ci95": [ratio, ratio]}
    dof = se ** 4 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    h = stats.t.ppf(0.975, dof) * se
    return {"ratio": ratio, "ci95": [ratio * math.exp(-h), ratio * math.exp(h)]}
