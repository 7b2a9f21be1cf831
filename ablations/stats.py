"""Per-arm statistics: mean ± 95% confidence interval (Student t), ratio to baseline, Welch's t-test."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci95: float  # half-width of the 95% interval; NaN below two values


def summarize(values) -> Summary:
    """Mean x̄, sample std s (ddof 1) and the 95% CI half-width t₀.₉₇₅(n−1)·s/√n."""
    x = np.asarray(values, dtype=float)
    n = len(x)
    if n == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    if n == 1:
        return Summary(1, float(x[0]), math.nan, math.nan)
    s = float(x.std(ddof=1))
    return Summary(n, float(x.mean()), s, float(stats.t.ppf(0.975, n - 1) * s / math.sqrt(n)))


def welch_p(a, b) -> float:
    """Two-sided p of Welch's t-test, t = (x̄a − x̄b)/√(sa²/na + sb²/nb); NaN below two values a side."""
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():  # identical constant samples: scipy warns and returns NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def ratio(mean: float, baseline_mean: float) -> float:
    """mean / baseline mean (NaN when the baseline mean is 0 or missing)."""
    return mean / baseline_mean if baseline_mean and math.isfinite(baseline_mean) else math.nan
