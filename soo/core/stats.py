"""Interval estimates for the evaluation report: Wilson intervals for rates, mean ± SD across seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence

Z_95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (Wilson 1927).

    Unlike the normal (Wald) interval it stays inside [0, 1] and is not degenerate at 0/n or
    n/n, which matters here: baseline deception rates are often 100%.
    """
    if n <= 0:
        return (float("nan"), float("nan"))
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in 0..{n}, got {successes}")
    p = successes / n
    denominator = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denominator
    half_width = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    lower = 0.0 if successes == 0 else max(0.0, center - half_width)
    upper = 1.0 if successes == n else min(1.0, center + half_width)
    return (lower, upper)


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); SD is nan for fewer than two values."""
    values = list(values)
    if not values:
        return (float("nan"), float("nan"))
    mean = sum(values) / len(values)
    if len(values) < 2:
        return (mean, float("nan"))
    return (mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)))


def mean_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of a normal-approximation 95% interval of the mean."""
    mean, sd = mean_sd(values)
    return (mean, Z_95 * sd / math.sqrt(len(values)) if len(values) > 1 else float("nan"))


def mean_t_ci95(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of a Student-t 95% interval of the mean (for a handful of seeds,
    where the normal interval is far too narrow); nan for fewer than two values."""
    return mean_t_interval(values, 0.95)


def mean_t_summary(values: Sequence[float]) -> dict:
    """{"mean", "half_width" (Student-t 95%; nan for one value), "n", "values"}: a per-seed result
    as the reports store it."""
    values = list(values)
    mean, half = mean_t_ci95(values)
    return {"mean": mean, "half_width": half, "n": len(values), "values": values}


def format_mean_t(summary: dict | None, digits: int = 3, signed: bool = False, with_n: bool = False) -> str:
    """A `mean_t_summary` as "mean ± half-width" (optionally "(n N)"); "-" when there is none."""
    if not summary:
        return "-"
    text = f"{summary['mean']:{'+' if signed else ''}.{digits}f} ± {summary['half_width']:.{digits}f}"
    return f"{text} (n {summary['n']})" if with_n else text


def mean_t_interval(values: Sequence[float], confidence: float) -> tuple[float, float]:
    """Mean and the half-width of a two-sided Student-t interval at `confidence` (e.g. 1 - 0.05/K
    for a Bonferroni correction over K comparisons); nan for fewer than two values."""
    from scipy.stats import t as student_t

    values = list(values)
    mean, sd = mean_sd(values)
    if len(values) < 2:
        return (mean, float("nan"))
    return (mean, float(student_t.ppf(0.5 + confidence / 2, len(values) - 1)) * sd / math.sqrt(len(values)))
