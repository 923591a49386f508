"""Statistics that say how sure they are: percentiles, bootstrap confidence intervals, two-sample verdicts.

The bootstrap is the percentile method: resample with replacement, take the statistic, read the
(1-confidence)/2 and (1+confidence)/2 quantiles. Seeded, so the same values give the same interval.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel

from tokengate.errors import InvalidInputError

Statistic = Callable[..., np.ndarray]  # called as statistic(samples, axis=1), like np.median or np.mean
Verdict = Literal["A faster", "B faster", "indistinguishable"]
_CELLS_PER_CHUNK = 2_000_000  # resampled values held in memory at once
MIN_SAMPLES_FOR_VERDICT = 3  # a bootstrap of one or two values says nothing about the spread


class Summary(BaseModel):
    """Location and spread of one metric; `ci_low`/`ci_high` bound the median (bootstrap, 95%)."""

    n: int
    mean: float | None = None
    median: float | None = None
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    min: float | None = None
    max: float | None = None


class Comparison(BaseModel):
    """B against A for one metric: `difference` is median(B) - median(A), with its bootstrap CI;
    `ratio` is median(B) / median(A), with its CI."""

    metric: str
    a: Summary
    b: Summary
    difference: float | None
    ci_low: float | None
    ci_high: float | None
    ratio: float | None
    ratio_ci_low: float | None = None
    ratio_ci_high: float | None = None
    higher_is_better: bool = False
    min_relative_difference: float = 0.0
    verdict: Verdict
    note: str | None = None  # why the verdict is "indistinguishable" when that is not the statistics' doing


def _array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray([v for v in values if v is not None], dtype=float)
    return array[np.isfinite(array)]


def _resampled(values: np.ndarray, statistic: Statistic, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """`resamples` bootstrap replicates of the statistic, computed in chunks to bound memory."""
    per_chunk = max(1, _CELLS_PER_CHUNK // len(values))
    replicates: list[np.ndarray] = []
    remaining = resamples
    while remaining > 0:
        size = min(per_chunk, remaining)
        samples = values[rng.integers(0, len(values), size=(size, len(values)))]
        replicates.append(np.asarray(statistic(samples, axis=1), dtype=float))
        remaining -= size
    return np.concatenate(replicates)


def _interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2
    low, high = np.quantile(replicates, [tail, 1 - tail])
    return float(low), float(high)


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise InvalidInputError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def bootstrap_ci(
    values: Sequence[float],
    statistic: Statistic = np.median,
    *,
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile-bootstrap confidence interval of `statistic` (called with `axis=1`) over `values`."""
    _check_confidence(confidence)
    array = _array(values)
    if array.size == 0:
        raise InvalidInputError("bootstrap_ci needs at least one value")
    if array.size == 1:
        return float(array[0]), float(array[0])
    return _interval(_resampled(array, statistic, resamples, np.random.default_rng(seed)), confidence)


def summarize(values: Sequence[float], *, seed: int = 0) -> Summary:
    """Mean, median, p50/p90/p99 and the bootstrap 95% CI of the median; every field None (n=0) when empty."""
    array = _array(values)
    if array.size == 0:
        return Summary(n=0)
    p50, p90, p99 = (float(x) for x in np.percentile(array, [50, 90, 99]))
    low, high = bootstrap_ci(array, seed=seed)
    return Summary(
        n=int(array.size), mean=float(array.mean()), median=p50, p50=p50, p90=p90, p99=p99,
        ci_low=low, ci_high=high, min=float(array.min()), max=float(array.max()),
    )  # fmt: skip


def _verdict(
    difference: float, ci: tuple[float, float], median_a: float, *, higher_is_better: bool, min_relative: float
) -> Verdict:
    low, high = ci
    if low <= 0 <= high or abs(difference) < min_relative * abs(median_a):
        return "indistinguishable"
    b_larger = low > 0
    return "B faster" if b_larger == higher_is_better else "A faster"


def compare_samples(
    metric: str,
    a: Sequence[float],
    b: Sequence[float],
    *,
    higher_is_better: bool = False,
    seed: int = 0,
    confidence: float = 0.95,
    resamples: int = 2000,
    min_relative_difference: float = 0.0,
) -> Comparison:
    """Compare B with A on one metric. The verdict names the faster side when the CI of median(B) - median(A)
    excludes 0 and the difference is at least `min_relative_difference` of A's median; else "indistinguishable".
    For latencies lower is better; pass `higher_is_better=True` for throughputs."""
    _check_confidence(confidence)
    array_a, array_b = _array(a), _array(b)
    summary_a, summary_b = summarize(array_a, seed=seed), summarize(array_b, seed=seed)
    if array_a.size == 0 or array_b.size == 0:
        return Comparison(
            metric=metric, a=summary_a, b=summary_b, difference=None, ci_low=None, ci_high=None, ratio=None,
            higher_is_better=higher_is_better, min_relative_difference=min_relative_difference,
            verdict="indistinguishable", note="no values on one side",
        )  # fmt: skip
    rng = np.random.default_rng(seed)
    medians_a = _resampled(array_a, np.median, resamples, rng)
    medians_b = _resampled(array_b, np.median, resamples, rng)
    median_a, median_b = float(np.median(array_a)), float(np.median(array_b))
    difference = median_b - median_a
    ci = _interval(medians_b - medians_a, confidence)
    ratio_ci: tuple[float | None, float | None] = (None, None)
    if np.all(medians_a > 0):
        ratio_ci = _interval(medians_b / medians_a, confidence)
    verdict = _verdict(
        difference, ci, median_a, higher_is_better=higher_is_better, min_relative=min_relative_difference
    )
    note = None
    if min(array_a.size, array_b.size) < MIN_SAMPLES_FOR_VERDICT:
        verdict, note = "indistinguishable", f"fewer than {MIN_SAMPLES_FOR_VERDICT} values on one side: no verdict"
    return Comparison(
        metric=metric, a=summary_a, b=summary_b, difference=difference, ci_low=ci[0], ci_high=ci[1],
        ratio=median_b / median_a if median_a else None, ratio_ci_low=ratio_ci[0], ratio_ci_high=ratio_ci[1],
        higher_is_better=higher_is_better, min_relative_difference=min_relative_difference,
        verdict=verdict, note=note,
    )  # fmt: skip
