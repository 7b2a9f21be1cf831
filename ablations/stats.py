"""Per-arm statistics: mean ± 95% confidence interval (Student t), ratio to baseline, Welch's t-test.

The formulas live in records/stats.py; this module gives them the shape a report table wants (NaN,
not None, where a statistic needs more runs).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from records import stats as record_stats


@dataclass(frozen=True)
class Summary:
    n: int
    mean: float
    std: float
    ci95: float  # half-width of the 95% interval; NaN below two values


def summarize(values) -> Summary:
    """Mean x̄, sample std s (ddof 1) and the 95% CI half-width t₀.₉₇₅(n−1)·s/√n."""
    if len(values) == 0:
        return Summary(0, math.nan, math.nan, math.nan)
    moments, interval = record_stats.mean_std(values), record_stats.ci95(values)
    half = math.nan if interval is None else (interval[1] - interval[0]) / 2
    return Summary(len(values), moments["mean"], math.nan if moments["std"] is None else moments["std"], half)


def welch_p(a, b) -> float:
    """Two-sided p of Welch's t-test, t = (x̄a − x̄b)/√(sa²/na + sb²/nb); NaN below two values a side."""
    p = record_stats.welch_p(a, b)
    return math.nan if p is None else p


def ratio(mean: float, baseline_mean: float) -> float:
    """mean / baseline mean (NaN when the baseline mean is 0 or missing)."""
    return mean / baseline_mean if baseline_mean and math.isfinite(baseline_mean) else math.nan
