"""The report's figures, drawn with matplotlib's Agg renderer (no display) from saved runs only.

Each function takes labelled runs and a PNG path, draws what applies to those runs and returns the path,
or None when no run has anything to show (e.g. TTFT by turn without a multiturn run).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from tokengate.bench.compare import samples_by_metric
from tokengate.bench.prefix_cache import analyze_prefix_cache
from tokengate.bench.run import BenchRun
from tokengate.bench.stats import Summary

LabelledRun = tuple[str, BenchRun]
DPI = 110


def _legend(axes: Axes) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, format="png", dpi=DPI)
    return path


def _error_bars(summaries: Sequence[Summary]) -> tuple[list[float], np.ndarray]:
    medians = [s.median if s.median is not None else np.nan for s in summaries]
    low = [m - s.ci_low if s.ci_low is not None else 0.0 for m, s in zip(medians, summaries, strict=True)]
    high = [s.ci_high - m if s.ci_high is not None else 0.0 for m, s in zip(medians, summaries, strict=True)]
    return medians, np.array([low, high])


def _turn_summaries(run: BenchRun, metric: str) -> tuple[list[int], list[Summary]]:
    prefix = f"{metric}[turn="
    turns = sorted(int(key[len(prefix) : -1]) for key in run.summaries if key.startswith(prefix))
    return turns, [run.summaries[f"{prefix}{t}]"] for t in turns]


def plot_ttft_by_turn(runs: Sequence[LabelledRun], path: Path) -> Path | None:
    """Median TTFT (95% CI) and median cached prompt tokens, by turn index, one line per multiturn run."""
    multiturn = [
        (label, run) for label, run in runs if run.workload == "multiturn" and _turn_summaries(run, "ttft_ms")[0]
    ]
    if not multiturn:
        return None
    figure = Figure(figsize=(10, 4))
    ttft_axes, cached_axes = figure.subplots(1, 2)
    for label, run in multiturn:
        turns, summaries = _turn_summaries(run, "ttft_ms")
        medians, errors = _error_bars(summaries)
        ttft_axes.errorbar(turns, medians, yerr=errors, marker="o", capsize=3, label=label)
        for metric, style in (("prompt_tokens", "--"), ("cached_tokens", "-")):
            turns, summaries = _turn_summaries(run, metric)
            if turns:
                cached_axes.plot(turns, [s.median for s in summaries], style, marker="o", label=f"{label}: {metric}")
    ttft_axes.set(title="TTFT by turn (median, 95% CI)", xlabel="turn", ylabel="ms")
    cached_axes.set(title="prompt and cached tokens by turn (median)", xlabel="turn", ylabel="tokens")
    for axes in (ttft_axes, cached_axes):
        axes.grid(alpha=0.3)
        _legend(axes)
    return _save(figure, path)


def _cdf(axes: Axes, values: Sequence[float], label: str) -> None:
    ordered = np.sort(np.asarray(values, dtype=float))
    axes.step(ordered, np.arange(1, len(ordered) + 1) / len(ordered), where="post", label=f"{label} (n={len(ordered)})")


def _cdf_series(runs: Sequence[LabelledRun], metric: str) -> list[tuple[str, list[float]]]:
    series = []
    for label, run in runs:
        samples = samples_by_metric(run)
        if run.levels:
            for level in run.levels:
                key = f"concurrency={level.concurrency}" if level.concurrency is not None else f"rate={level.rate:g}"
                series.append((f"{label} {level.label}", samples.get(f"{metric}[{key}]", [])))
        else:
            series.append((label, samples.get(metric, [])))
    return [(label, values) for label, values in series if values]


def plot_latency_cdfs(runs: Sequence[LabelledRun], path: Path) -> Path | None:
    """Empirical CDFs of TTFT, TPOT and E2E: one curve per run, or per level of a sweep."""
    metrics = [(m, _cdf_series(runs, m)) for m in ("ttft_ms", "tpot_ms", "e2e_ms")]
    metrics = [(m, s) for m, s in metrics if s]
    if not metrics:
        return None
    figure = Figure(figsize=(5 * len(metrics), 4))
    axes_list = np.atleast_1d(figure.subplots(1, len(metrics)))
    for axes, (metric, series) in zip(axes_list, metrics, strict=True):
        for label, values in series:
            _cdf(axes, values, label)
        axes.set(title=f"{metric.removesuffix('_ms').upper()} CDF", xlabel="ms", ylabel="fraction of requests")
        axes.grid(alpha=0.3)
        _legend(axes)
    return _save(figure, path)


def plot_throughput(runs: Sequence[LabelledRun], path: Path) -> Path | None:
    """Output tokens/s and TTFT p50/p90 against concurrency (or request rate), one line per sweep run."""
    sweeps = [(label, run) for label, run in runs if run.levels]
    if not sweeps:
        return None
    figure = Figure(figsize=(10, 4))
    rate_axes, ttft_axes = figure.subplots(1, 2)
    x_label = "concurrency"
    for label, run in sweeps:
        by_rate = run.levels[0].concurrency is None
        x_label = "requests/s offered" if by_rate else "concurrency"
        xs = [level.rate if by_rate else level.concurrency for level in run.levels]
        rate_axes.plot(xs, [lv.scalars.get("output_tokens_per_second", np.nan) for lv in run.levels], marker="o",
                       label=label)  # fmt: skip
        for quantile, style in (("p50", "-"), ("p90", "--")):
            values = [getattr(lv.summaries.get("ttft_ms", Summary(n=0)), quantile) for lv in run.levels]
            ttft_axes.plot(xs, [np.nan if v is None else v for v in values], style, marker="o",
                           label=f"{label} {quantile}")  # fmt: skip
    rate_axes.set(title="output throughput", xlabel=x_label, ylabel="tokens/s")
    ttft_axes.set(title="TTFT", xlabel=x_label, ylabel="ms")
    for axes in (rate_axes, ttft_axes):
        axes.grid(alpha=0.3)
        _legend(axes)
    return _save(figure, path)


def plot_hit_vs_miss(runs: Sequence[LabelledRun], path: Path) -> Path | None:
    """TTFT of misses and hits per prompt length: every request as a dot, the median with its 95% CI."""
    cache_runs = [
        (label, run) for label, run in runs if run.workload == "prefix-cache" and analyze_prefix_cache(run).lengths
    ]
    if not cache_runs:
        return None
    figure = Figure(figsize=(max(6, 3 * sum(len(analyze_prefix_cache(r).lengths) for _, r in cache_runs)), 4))
    axes = figure.subplots()
    ticks, labels = [], []
    position = 0.0
    for label, run in cache_runs:
        for row in analyze_prefix_cache(run).lengths:
            for offset, phase, summary, color in ((0.0, "miss", row.comparison.a, "tab:red"),
                                                  (0.4, "hit", row.comparison.b, "tab:green")):  # fmt: skip
                values = [r.ttft_ms for r in run.requests if r.phase == phase and r.ok and r.ttft_ms is not None
                          and r.target_prompt_tokens == row.prompt_tokens]  # fmt: skip
                jitter = np.random.default_rng(0).uniform(-0.08, 0.08, len(values))
                axes.scatter(position + offset + jitter, values, s=10, alpha=0.5, color=color)
                medians, errors = _error_bars([summary])
                axes.errorbar([position + offset], medians, yerr=errors, fmt="_", markersize=18, capsize=6,
                              color="black")  # fmt: skip
            ticks.append(position + 0.2)
            speedup = f"×{row.speedup:.1f}" if row.speedup else ""
            labels.append(f"{label}\n{row.prompt_tokens} tokens {speedup}\nmiss | hit")
            position += 1.2
    axes.set_xticks(ticks, labels, fontsize=7)
    axes.set(title="TTFT: miss (red) vs hit (green), median and 95% CI", ylabel="ms")
    axes.set_yscale("log")
    axes.grid(alpha=0.3, axis="y")
    return _save(figure, path)


PLOTS = {
    "ttft-by-turn": plot_ttft_by_turn,
    "latency-cdfs": plot_latency_cdfs,
    "throughput": plot_throughput,
    "hit-vs-miss": plot_hit_vs_miss,
}
