"""`bench compare A.json B.json`: per metric, B against A, with the CI of the difference and a verdict.

Latency metrics are compared on the raw per-request values both runs kept (so the CIs are honest), matched
by name: the run-wide ttft/tpot/itl/e2e, TTFT by turn (multiturn), TTFT miss and hit by length
(prefix-cache) and every metric per load level (sweep, matched by concurrency or rate).

Output throughput is one number per run, so its samples are batch means: the run's span cut into
`THROUGHPUT_WINDOWS` equal windows, each request's output tokens spread evenly from its first token to its
last, and tokens per second counted in each window; the verdict compares the windows' medians (higher is
better). Request rates and counts are shown side by side with their ratio, without a verdict.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from pydantic import BaseModel

from tokengate.bench.aggregate import LATENCY_METRICS, latency_values
from tokengate.bench.records import RequestRecord
from tokengate.bench.run import BenchRun
from tokengate.bench.stats import Comparison, compare_samples

RATE_SCALARS = ("requests_per_second", "output_tokens_per_second", "goodput_per_second")
THROUGHPUT_WINDOWS = 10
THROUGHPUT_METRIC = "output_tok_per_s"


class ScalarComparison(BaseModel):
    name: str
    a: float | None
    b: float | None
    ratio: float | None  # b / a


class RunComparison(BaseModel):
    a: str
    b: str
    workload: str
    comparisons: list[Comparison]
    scalars: list[ScalarComparison]
    warnings: list[str] = []


def samples_by_metric(run: BenchRun) -> dict[str, list[float]]:
    """Every comparable metric of a run and its raw values, keyed as in `BenchRun.summaries`."""
    samples = {metric: latency_values(run.requests, metric) for metric in LATENCY_METRICS}
    _add_groups(samples, run.requests, lambda r: r.turn if run.workload == "multiturn" else None, "turn", ("ttft_ms",))
    if run.workload == "prefix-cache":
        for phase in ("miss", "hit"):
            rows = [r for r in run.requests if r.phase == phase]
            samples[f"ttft_{phase}_ms"] = latency_values(rows, "ttft_ms")
            lengths = sorted({r.target_prompt_tokens for r in rows if r.target_prompt_tokens is not None})
            for length in lengths if len(lengths) > 1 else []:  # one length: the pooled key says it all
                subset = [r for r in rows if r.target_prompt_tokens == length]
                samples[f"ttft_{phase}_ms[tokens={length}]"] = latency_values(subset, "ttft_ms")
    for level in run.levels:
        key = f"concurrency={level.concurrency}" if level.concurrency is not None else f"rate={level.rate:g}"
        rows = [r for r in run.requests if r.level == level.index]
        for metric in LATENCY_METRICS:
            samples[f"{metric}[{key}]"] = latency_values(rows, metric)
    return samples


def throughput_windows(records: list[RequestRecord], windows: int = THROUGHPUT_WINDOWS) -> list[float]:
    """Output tokens per second in each of `windows` equal slices of the span the successful requests cover."""
    spans = [
        (r.started_at + r.ttft_ms / 1000, r.started_at + r.e2e_ms / 1000, r.completion_tokens)
        for r in records
        if r.ok and r.ttft_ms is not None and r.completion_tokens
    ]
    if not spans:
        return []
    start = min(first for first, _, _ in spans)
    width = (max(last for _, last, _ in spans) - start) / windows
    if width <= 0:
        return []
    tokens = np.zeros(windows)
    edges = start + width * np.arange(windows + 1)
    for first, last, count in spans:
        if last <= first:  # every token in one burst: it lands in the window of its last byte
            tokens[min(int((last - start) / width), windows - 1)] += count
            continue
        overlap = np.clip(np.minimum(edges[1:], last) - np.maximum(edges[:-1], first), 0, None)
        tokens += count * overlap / (last - first)
    return [float(value) for value in tokens / width]


def _add_groups(
    samples: dict[str, list[float]],
    records: list[RequestRecord],
    group_of: Callable[[RequestRecord], int | None],
    name: str,
    metrics: tuple[str, ...],
) -> None:
    groups = sorted({g for g in map(group_of, records) if g is not None})
    for group in groups:
        rows = [r for r in records if group_of(r) == group]
        for metric in metrics:
            samples[f"{metric}[{name}={group}]"] = latency_values(rows, metric)


def _scalar_names(a: BenchRun, b: BenchRun) -> list[str]:
    names = [n for n in RATE_SCALARS if n in a.scalars or n in b.scalars]
    return names + sorted(n for n in set(a.scalars) & set(b.scalars) if n not in names)


def _warnings(a: BenchRun, b: BenchRun) -> list[str]:
    warnings = []
    if a.workload != b.workload:
        warnings.append(f"different workloads: A is {a.workload}, B is {b.workload}")
    ignored = {"salt", "seed", "metrics_interval_s"}
    differing = sorted(
        k for k in set(a.config) | set(b.config) if k not in ignored and a.config.get(k) != b.config.get(k)
    )
    if differing:
        warnings.append("the workloads differ in: " + ", ".join(differing))
    if a.interrupted or b.interrupted:
        warnings.append("a run was interrupted: it covers fewer requests")
    return warnings


def compare_runs(
    a: BenchRun,
    b: BenchRun,
    *,
    a_name: str = "A",
    b_name: str = "B",
    seed: int = 0,
    min_relative_difference: float = 0.0,
) -> RunComparison:
    """Compare B with A on every latency metric both runs have, and their throughput figures."""
    samples_a, samples_b = samples_by_metric(a), samples_by_metric(b)
    comparisons = [
        compare_samples(metric, samples_a[metric], samples_b[metric], seed=seed,
                        min_relative_difference=min_relative_difference)
        for metric in samples_a
        if metric in samples_b and samples_a[metric] and samples_b[metric]
    ]  # fmt: skip
    windows_a, windows_b = throughput_windows(a.requests), throughput_windows(b.requests)
    if windows_a and windows_b:
        comparisons.append(compare_samples(
            THROUGHPUT_METRIC, windows_a, windows_b, higher_is_better=True, seed=seed,
            min_relative_difference=min_relative_difference,
        ))  # fmt: skip
    scalars = [
        ScalarComparison(
            name=name,
            a=a.scalars.get(name),
            b=b.scalars.get(name),
            ratio=b.scalars[name] / a.scalars[name] if a.scalars.get(name) and name in b.scalars else None,
        )
        for name in _scalar_names(a, b)
    ]
    return RunComparison(
        a=a_name, b=b_name, workload=a.workload, comparisons=comparisons, scalars=scalars, warnings=_warnings(a, b)
    )
