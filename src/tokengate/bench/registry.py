"""Workloads by name, each with its typed config: for callers that hold a name and a dict (tune's search
space, a file). A saved run's `config` also holds what the run resolved (`salt`, capped lengths): drop
`salt` before rerunning, or the rerun hits the cache the first run filled."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from tokengate.bench.multiturn import MultiturnConfig, run_multiturn
from tokengate.bench.prefix_cache import PrefixCacheConfig, run_prefix_cache
from tokengate.bench.run import BenchRun
from tokengate.bench.sweep import SweepConfig, run_sweep
from tokengate.bench.target import BenchTarget
from tokengate.errors import InvalidInputError


@dataclass(frozen=True)
class WorkloadSpec:
    config: type[BaseModel]
    run: Callable[..., BenchRun]


WORKLOADS: dict[str, WorkloadSpec] = {
    "prefix-cache": WorkloadSpec(PrefixCacheConfig, run_prefix_cache),
    "multiturn": WorkloadSpec(MultiturnConfig, run_multiturn),
    "sweep": WorkloadSpec(SweepConfig, run_sweep),
}


def workload_config(name: str, arguments: dict[str, Any]) -> BaseModel:
    """The typed config of workload `name` from a dict; errors name the workload, the field and the known names."""
    spec = WORKLOADS.get(name)
    if spec is None:
        raise InvalidInputError(f"unknown workload {name!r}; known: {', '.join(sorted(WORKLOADS))}")
    try:
        return spec.config.model_validate(arguments)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise InvalidInputError(f"workload {name}: {where}: {first['msg']}") from None


def run_workload(
    name: str,
    target: BenchTarget,
    arguments: dict[str, Any],
    *,
    on_progress: Callable[[int, int], None] | None = None,
    stop: threading.Event | None = None,
) -> BenchRun:
    """Run workload `name` with `arguments` (its config's fields) against `target`."""
    config = workload_config(name, arguments)
    return WORKLOADS[name].run(target, config, on_progress=on_progress, stop=stop)
