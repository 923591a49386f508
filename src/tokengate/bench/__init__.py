"""Workloads, the timing client, server-metrics scraping, statistics and reports.

run_prefix_cache / run_multiturn / run_sweep (target, config) -> BenchRun   synchronous; stop= and Ctrl-C
BenchRun.save(path) / BenchRun.load(path)                                   one JSON file per run
summarize, bootstrap_ci, compare_samples, compare_runs                      statistics with CIs
analyze_prefix_cache(run)                                                   hit vs miss, hit rates
write_report(runs, html_path)                                               HTML + PNGs
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Re-exported lazily: `tokengate status` imports server_metrics and should not pay for numpy and aiohttp.
_EXPORTS = {
    "BenchRun": "run", "SweepLevel": "run", "BenchTarget": "target", "RequestRecord": "records",
    "Comparison": "stats", "Summary": "stats", "bootstrap_ci": "stats", "compare_samples": "stats",
    "summarize": "stats",
    "EngineMetrics": "server_metrics", "ServerDeltas": "server_metrics", "parse_metrics": "server_metrics",
    "scrape_metrics": "server_metrics",
    "MultiturnConfig": "multiturn", "run_multiturn": "multiturn",
    "PrefixCacheAnalysis": "prefix_cache", "PrefixCacheConfig": "prefix_cache",
    "analyze_prefix_cache": "prefix_cache", "run_prefix_cache": "prefix_cache",
    "SweepConfig": "sweep", "run_sweep": "sweep",
    "RunComparison": "compare", "compare_runs": "compare",
    "write_report": "report",
    "WORKLOADS": "registry", "run_workload": "registry", "workload_config": "registry",
}  # fmt: skip
__all__ = [
    "WORKLOADS",
    "BenchRun",
    "BenchTarget",
    "Comparison",
    "EngineMetrics",
    "MultiturnConfig",
    "PrefixCacheAnalysis",
    "PrefixCacheConfig",
    "RequestRecord",
    "RunComparison",
    "ServerDeltas",
    "Summary",
    "SweepConfig",
    "SweepLevel",
    "analyze_prefix_cache",
    "bootstrap_ci",
    "compare_runs",
    "compare_samples",
    "parse_metrics",
    "run_multiturn",
    "run_prefix_cache",
    "run_sweep",
    "run_workload",
    "scrape_metrics",
    "summarize",
    "workload_config",
    "write_report",
]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
