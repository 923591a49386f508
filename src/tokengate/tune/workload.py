"""The measurement a trial takes: a `tokengate bench` workload, turned into run-level metrics."""

from __future__ import annotations

import threading
from collections import Counter
from typing import TypeVar

import numpy as np
from pydantic import BaseModel, ValidationError

from tokengate.bench.aggregate import LATENCY_METRICS, latency_values
from tokengate.bench.multiturn import MultiturnConfig, run_multiturn
from tokengate.bench.run import BenchRun
from tokengate.bench.sweep import SweepConfig, run_sweep
from tokengate.bench.target import BenchTarget
from tokengate.errors import InvalidInputError
from tokengate.tune.space import STATISTICS, Workload
from tokengate.tune.trial import Endpoint, Measurement
from tokengate.tune.trial import Workload as WorkloadFunction

SAMPLES = ("ttft_ms", "e2e_ms", "tpot_ms")
KEPT_ERRORS = 5  # distinct messages kept per run: enough to say why, not a copy of every failure
ConfigT = TypeVar("ConfigT", bound=BaseModel)


def measurement_from_run(run: BenchRun) -> Measurement:
    """Scalars as bench computed them, latency statistics over successful requests, the engine's cache hits."""
    metrics: dict[str, float | None] = dict(run.scalars)
    for name in LATENCY_METRICS:
        values = latency_values(run.requests, name)
        for stat in STATISTICS:
            metrics[f"{name}.{stat}"] = _statistic(values, stat)
    server = run.server
    metrics["prefix_cache_hit_rate"] = server.hit_rate if server else None
    metrics["preemptions"] = server.preemptions if server else None
    samples = {name: latency_values(run.requests, name) for name in SAMPLES}
    said = Counter((r.error or f"HTTP {r.status}")[:300] for r in run.requests if not r.ok)
    errors = dict(said.most_common(KEPT_ERRORS))
    return Measurement(metrics=metrics, samples=samples, interrupted=run.interrupted, errors=errors)


def _statistic(values: list[float], stat: str) -> float | None:
    if not values:
        return None
    if stat == "mean":
        return float(np.mean(values))
    return float(np.percentile(values, float(stat.removeprefix("p"))))


def bench_workload(spec: Workload) -> WorkloadFunction:
    """The space's workload as a function a trial calls once per repeat; arguments are checked now."""
    if spec.kind == "multiturn":
        config = _config(MultiturnConfig, spec)

        def multiturn(endpoint: Endpoint, stop: threading.Event) -> Measurement:
            return measurement_from_run(run_multiturn(_target(endpoint), config, stop=stop))

        return multiturn
    sweep_config = _config(SweepConfig, spec)

    def sweep(endpoint: Endpoint, stop: threading.Event) -> Measurement:
        return measurement_from_run(run_sweep(_target(endpoint), sweep_config, stop=stop))

    return sweep


def _target(endpoint: Endpoint) -> BenchTarget:
    return BenchTarget(base_url=endpoint.base_url, model=endpoint.model, api_key=endpoint.api_key)


def _config(model: type[ConfigT], spec: Workload) -> ConfigT:
    try:
        return model(**spec.args)
    except ValidationError as exc:
        problems = [f"workload.args.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError(f"{spec.kind} workload: " + "; ".join(problems)) from None
