from __future__ import annotations

import numpy as np
import pytest

from tokengate.bench.stats import Summary, bootstrap_ci, compare_samples, summarize
from tokengate.errors import InvalidInputError


def normal(mean: float, sd: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, sd, n))


def test_summary_of_a_known_normal_distribution() -> None:
    summary = summarize(normal(100, 10, 4000, seed=1))
    assert summary.n == 4000
    assert summary.median == summary.p50
    assert summary.median == pytest.approx(100, abs=0.8)
    assert summary.mean == pytest.approx(100, abs=0.8)
    assert summary.p90 == pytest.approx(100 + 1.2816 * 10, abs=1.0)
    assert summary.p99 == pytest.approx(100 + 2.3263 * 10, abs=2.0)
    assert summary.ci_low is not None and summary.ci_high is not None
    assert summary.ci_low < 100 < summary.ci_high
    # The median's standard error is about 1.2533 * sd / sqrt(n) = 0.198: a 95% CI about 0.78 wide.
    assert summary.ci_high - summary.ci_low == pytest.approx(0.78, rel=0.3)


def test_summary_of_uniform_percentiles() -> None:
    summary = summarize(list(range(1, 101)))
    assert (summary.p50, summary.min, summary.max) == (50.5, 1, 100)
    assert summary.p90 == pytest.approx(90.1)


def test_ci_narrows_with_more_samples() -> None:
    small = summarize(normal(0, 1, 50, seed=2))
    large = summarize(normal(0, 1, 2000, seed=2))
    assert (large.ci_high - large.ci_low) < (small.ci_high - small.ci_low) / 3  # type: ignore[operator]


def test_empty_and_missing_values_are_safe() -> None:
    assert summarize([]) == Summary(n=0)
    assert summarize([None, float("nan")]).n == 0  # type: ignore[list-item]
    assert summarize([5.0, None]).median == 5.0  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="at least one value"):
        bootstrap_ci([])
    assert bootstrap_ci([3.0]) == (3.0, 3.0)


def test_bootstrap_is_seeded_and_takes_other_statistics() -> None:
    values = normal(10, 2, 200, seed=3)
    assert bootstrap_ci(values, seed=7) == bootstrap_ci(values, seed=7)
    assert bootstrap_ci(values, seed=7) != bootstrap_ci(values, seed=8)
    low, high = bootstrap_ci(values, np.mean, confidence=0.99, resamples=500)
    assert low < float(np.mean(values)) < high
    with pytest.raises(InvalidInputError, match="confidence"):
        bootstrap_ci(values, confidence=1.5)


def test_large_samples_are_resampled_in_chunks() -> None:
    values = normal(0, 1, 50_000, seed=4)
    low, high = bootstrap_ci(values, resamples=300)
    assert low < 0.03 and high > -0.03


def test_clearly_faster_b_and_the_direction_of_higher_is_better() -> None:
    a, b = normal(100, 5, 40, seed=5), normal(50, 5, 40, seed=6)
    latency = compare_samples("ttft_ms", a, b)
    assert latency.verdict == "B faster"
    assert latency.difference == pytest.approx(-50, abs=4)
    assert latency.ci_high is not None and latency.ci_high < 0
    assert latency.ratio == pytest.approx(0.5, abs=0.05)
    assert latency.ratio_ci_low is not None and latency.ratio_ci_low < latency.ratio < latency.ratio_ci_high  # type: ignore[operator]
    throughput = compare_samples("tokens_per_second", a, b, higher_is_better=True)
    assert throughput.verdict == "A faster"
    assert compare_samples("ttft_ms", b, a).verdict == "A faster"


def test_same_distribution_is_indistinguishable() -> None:
    a = normal(100, 10, 60, seed=9)
    shuffled = list(np.random.default_rng(1).permutation(a))
    same = compare_samples("ttft_ms", a, shuffled)
    assert same.difference == 0
    assert same.verdict == "indistinguishable"
    assert compare_samples("ttft_ms", a, normal(100, 10, 60, seed=10)).verdict == "indistinguishable"


def test_small_real_differences_and_the_practical_threshold() -> None:
    a = normal(100, 1, 300, seed=11)
    b = [x * 1.02 for x in a]
    assert compare_samples("e2e_ms", a, b).verdict == "A faster"
    thresholded = compare_samples("e2e_ms", a, b, min_relative_difference=0.05)
    assert thresholded.verdict == "indistinguishable"
    assert thresholded.ci_low is not None and thresholded.ci_low > 0


def test_too_few_samples_give_no_verdict() -> None:
    one_each = compare_samples("ttft_ms", [750.0], [50.0])  # the seeds' "x15 faster" from one miss and one hit
    assert one_each.verdict == "indistinguishable"
    assert one_each.note is not None and "fewer than 3" in one_each.note
    assert compare_samples("ttft_ms", [750.0, 760, 740], [50.0, 55, 52]).verdict == "B faster"
    empty = compare_samples("ttft_ms", [], [1.0, 2.0])
    assert (empty.verdict, empty.difference, empty.note) == ("indistinguishable", None, "no values on one side")
