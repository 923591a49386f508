"""The search-space file: the deployment you run today, the engine args to vary, the workload and the goal.

```yaml
version: 1
base:                         # a fleet-file deployment (name and port optional): the baseline
  model: ./tiny-qwen3
  gpu: cpu
  command: [python3, -m, vllm.entrypoints.openai.api_server]
  engine_args: {max-model-len: 4096, enforce-eager: true, kv-cache-memory-bytes: 67108864, max-num-seqs: 1}
parameters:                   # engine args: a list of values, or a range {low, high, step, log}
  max-num-seqs: [1, 8]
  gpu-memory-utilization: {low: 0.8, high: 0.95, step: 0.05}
candidates:                   # extra configurations (overrides of base), tried after the grid
  - {max-num-seqs: 8, kv-cache-memory-bytes: 2097152}
workload: {kind: multiturn, args: {sessions: 8, turns: 4}, warmup_requests: 2}
objective: {metric: output_tokens_per_second, goal: maximize}
constraints: [{metric: ttft_ms.p99, max: 2000}]
repeats: 3                    # workload runs per configuration, on one engine start: the CI's samples
search: {strategy: grid}      # or {strategy: tpe, budget: 12, seed: 0}
```
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tokengate.errors import InvalidInputError
from tokengate.fleet.engine_args import EngineArgs
from tokengate.fleet.loader import describe_errors, read_yaml_mapping
from tokengate.fleet.schema import Deployment, engine_args_from_mapping

Scalar = bool | int | float | str
DEFAULT_PORT = 8000  # the champion snippet's port when the base names none; trials always take a free port
# Deployment fields a parameter may not vary: the trial owns them.
RESERVED = frozenset({"model", "served_model_name", "host", "port", "passthrough"})

LATENCIES = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")
STATISTICS = ("mean", "p50", "p90", "p95", "p99")
SCALARS = (
    "output_tokens_per_second", "total_tokens_per_second", "requests_per_second", "goodput_per_second",
    "goodput_fraction", "completed_requests", "failed_requests", "prefix_cache_hit_rate", "preemptions",
)  # fmt: skip
METRICS = (*SCALARS, *(f"{name}.{stat}" for name in LATENCIES for stat in STATISTICS))


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Goal(StrEnum):
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class Strategy(StrEnum):
    GRID = "grid"
    TPE = "tpe"


def _known_metric(value: str) -> str:
    if value not in METRICS:
        raise ValueError(f"unknown metric {value!r}; known: {', '.join(METRICS)}")
    return value


class Range(Strict):
    """Numbers from `low` to `high` (inclusive); `step` is needed for a grid; `log` samples on a log scale."""

    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False
    integer: bool = False  # set from the YAML: all of low, high and step written as integers

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log range needs low > 0")
        return self

    def grid_values(self) -> list[Scalar]:
        if self.step is None:
            raise ValueError("a range needs `step` for a grid search (or use search: {strategy: tpe})")
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        values = [self.low + index * self.step for index in range(count)]
        return [round(v) if self.integer else round(v, 10) for v in values]


class Parameter(Strict):
    """One engine arg to vary: `values` to choose from, or a `range`."""

    name: str
    values: list[Scalar] | None = None
    range: Range | None = None

    def grid_values(self) -> list[Scalar]:
        return list(self.values) if self.values is not None else self.range.grid_values()  # type: ignore[union-attr]


class Workload(Strict):
    """A `tokengate bench` workload and its arguments (those of `MultiturnConfig` or `SweepConfig`)."""

    kind: Literal["multiturn", "sweep"] = "multiturn"
    args: dict[str, Any] = Field(default_factory=dict)
    warmup_requests: int = Field(2, ge=0, description="Chat requests sent after /health, before measuring.")


class Objective(Strict):
    metric: str = "output_tokens_per_second"
    goal: Goal = Goal.MAXIMIZE

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _known_metric(value)


class Constraint(Strict):
    """A bound the mean over repeats must meet, e.g. `{metric: ttft_ms.p99, max: 2000}`."""

    metric: str
    min: float | None = None
    max: float | None = None

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        return _known_metric(value)

    @model_validator(mode="after")
    def _bounded(self) -> Constraint:
        if self.min is None and self.max is None:
            raise ValueError(f"constraint on {self.metric} needs `min` or `max`")
        return self

    def violated_by(self, value: float | None) -> str | None:
        if value is None:
            return f"{self.metric} was not measured"
        if self.max is not None and value > self.max:
            return f"{self.metric} {value:.4g} > {self.max:.4g}"
        if self.min is not None and value < self.min:
            return f"{self.metric} {value:.4g} < {self.min:.4g}"
        return None


class SearchSettings(Strict):
    strategy: Strategy = Strategy.GRID
    budget: int | None = Field(None, ge=1, description="Engine launches at most (required for tpe).")
    seed: int = 0

    @model_validator(mode="after")
    def _budget(self) -> SearchSettings:
        if self.strategy is Strategy.TPE and self.budget is None:
            raise ValueError("search.strategy tpe needs a budget, e.g. search: {strategy: tpe, budget: 12}")
        return self


class Candidate(BaseModel):
    """One configuration: the base deployment with these engine-arg overrides (names with underscores)."""

    model_config = ConfigDict(frozen=True)

    overrides: dict[str, Scalar] = Field(default_factory=dict)

    @property
    def key(self) -> str:
        return json.dumps(self.overrides, sort_keys=True, separators=(",", ":"))

    @property
    def label(self) -> str:
        if not self.overrides:
            return "baseline"
        return " ".join(f"{name}={_short(value)}" for name, value in self.overrides.items())


def _short(value: Scalar) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class SearchSpace(Strict):
    version: int = 1
    state_dir: str | None = Field(None, description="Results and logs; default .tokengate/tune/<file stem>.")
    base: Deployment
    parameters: list[Parameter] = Field(default_factory=list)
    candidates: list[dict[str, Scalar]] = Field(default_factory=list)
    workload: Workload = Field(default_factory=Workload)
    objective: Objective = Field(default_factory=Objective)
    constraints: list[Constraint] = Field(default_factory=list)
    repeats: int = Field(3, ge=1, le=100, description="Workload runs per configuration; 2 or more give a CI.")
    search: SearchSettings = Field(default_factory=SearchSettings)

    @field_validator("base", mode="before")
    @classmethod
    def _base_defaults(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {"name": "tuned", "port": DEFAULT_PORT, **value}
        return value

    @field_validator("parameters", mode="before")
    @classmethod
    def _parameters(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return [_parameter(str(name), spec) for name, spec in value.items()]

    @field_validator("candidates", mode="before")
    @classmethod
    def _candidates(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value
        return [{_arg_name(k): v for k, v in c.items()} if isinstance(c, dict) else c for c in value]

    @model_validator(mode="after")
    def _consistent(self) -> SearchSpace:
        names = [p.name for p in self.parameters]
        for name in [*names, *(k for c in self.candidates for k in c)]:
            if name in RESERVED:
                raise ValueError(
                    f"{name} cannot be tuned: the trial sets it (parameters and candidates are engine args)"
                )
        if len(set(names)) != len(names):
            raise ValueError("a parameter is listed twice (dashes and underscores name the same flag)")
        if self.search.strategy is Strategy.GRID:
            for parameter in self.parameters:
                parameter.grid_values()
        return self

    def fingerprint(self) -> str:
        """What makes two runs the same search; the budget may change on resume."""
        document = self.model_dump(mode="json", exclude={"search": {"budget": True}, "state_dir": True})
        return hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest()[:16]

    def base_value(self, name: str) -> Scalar | None:
        engine = self.base.engine_args
        if name in engine.model_fields_set:
            return getattr(engine, name)  # type: ignore[no-any-return]
        return engine.passthrough.get(name)

    def candidate(self, assignment: dict[str, Scalar]) -> Candidate:
        """Overrides equal to the base's own value are dropped, so the baseline has exactly one key."""
        overrides = {k: v for k, v in assignment.items() if not _same(self.base_value(k), v)}
        return Candidate(overrides=overrides)

    def grid(self) -> list[Candidate]:
        """The baseline, every combination of parameter values, then the explicit candidates; each once."""
        combos = itertools.product(*(p.grid_values() for p in self.parameters))
        assignments = [{}, *(dict(zip([p.name for p in self.parameters], c, strict=True)) for c in combos)]
        unique: dict[str, Candidate] = {}
        for assignment in [*assignments, *self.candidates]:
            candidate = self.candidate(assignment)
            unique.setdefault(candidate.key, candidate)
        return list(unique.values())

    def deployment(self, candidate: Candidate, *, port: int | None = None) -> Deployment:
        """The base deployment with the candidate's engine args (and a port, for a trial)."""
        update: dict[str, Any] = {"engine_args": engine_args_with(self.base.engine_args, candidate.overrides)}
        if port is not None:
            update["port"] = port
        return self.base.model_copy(update=update)


def _same(base: Scalar | None, value: Scalar) -> bool:
    if base is None:
        return False
    if isinstance(base, bool) or isinstance(value, bool):
        return base is value or str(base).lower() == str(value).lower()
    return base == value or str(base) == str(value)


def _arg_name(name: Any) -> str:
    return str(name).removeprefix("--").replace("-", "_")


def _parameter(name: str, spec: Any) -> dict[str, Any]:
    name = _arg_name(name)
    if isinstance(spec, list):
        return {"name": name, "values": spec}
    if isinstance(spec, dict) and "values" in spec:
        return {"name": name, **spec}
    if isinstance(spec, dict):
        integer = all(isinstance(spec.get(k, 1), int) and not isinstance(spec.get(k), bool) for k in ("low", "high"))
        integer = integer and isinstance(spec.get("step", 1), int)
        return {"name": name, "range": {**spec, "integer": integer}}
    return {"name": name, "values": spec}


def engine_args_with(engine: EngineArgs, overrides: dict[str, Scalar]) -> EngineArgs:
    """`engine` with each override set, typed where Tokengate knows the flag, passed through otherwise."""
    raw: dict[str, Any] = {k: v for k, v in engine.model_dump(exclude_unset=True).items() if k != "passthrough"}
    raw.update(engine.passthrough)
    raw.update(overrides)
    try:
        return engine_args_from_mapping(raw)
    except ValidationError as exc:
        problems = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError(f"engine args {overrides}: " + "; ".join(problems)) from None


def load_space(path: Path, environ: dict[str, str] | None = None) -> SearchSpace:
    """Read a search-space file: YAML, `${VAR}` as in fleet files, errors naming file:line and the field."""
    expanded, root = read_yaml_mapping(path, "search-space file", "a mapping with a `base:` deployment", environ)
    if "base" not in expanded:
        raise InvalidInputError(f"{path}: a search-space file is a mapping with a `base:` deployment")
    try:
        space = SearchSpace(**expanded)
    except ValidationError as exc:
        raise InvalidInputError(describe_errors(exc, path, root, "search-space file", "check the spelling")) from None
    _check_values(space, path)
    return _with_absolute_paths(space, path)


def _check_values(space: SearchSpace, path: Path) -> None:
    """Every value a grid can produce must be a valid engine arg, before any engine starts."""
    for parameter in space.parameters:
        values = parameter.values if parameter.values is not None else [parameter.range.low, parameter.range.high]  # type: ignore[union-attr]
        for value in values:
            try:
                engine_args_with(space.base.engine_args, {parameter.name: value})
            except InvalidInputError as exc:
                raise InvalidInputError(f"{path}: parameters.{parameter.name}: {value!r} is not valid: {exc}") from None
    for index, overrides in enumerate(space.candidates):
        try:
            engine_args_with(space.base.engine_args, overrides)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}: candidates.{index}: {exc}") from None


def _with_absolute_paths(space: SearchSpace, path: Path) -> SearchSpace:
    base_dir = path.resolve().parent
    model = space.base.model
    if model.startswith((".", "/", "~")):
        model = str((base_dir / Path(model).expanduser()).resolve())
    state = Path(space.state_dir).expanduser() if space.state_dir else Path(".tokengate") / "tune" / path.stem
    state = state if state.is_absolute() else (base_dir / state).resolve()
    return space.model_copy(update={"base": space.base.model_copy(update={"model": model}), "state_dir": str(state)})
