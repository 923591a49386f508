"""From trials to a decision you can trust: estimates with CIs, constraints, and the champion.

Each configuration's repeats are a few run-level values (3-5), so intervals
are Student-t (the percentile bootstrap is too narrow for so few samples), and
two configurations are compared by the Welch interval of their difference of
means. A configuration beats the baseline only when that interval excludes
zero in the objective's good direction. Among configurations that cannot be
told apart, the simpler and safer one wins: fewest changes from the baseline,
then less memory pressure (lower gpu_memory_utilization, max_num_seqs,
max_num_batched_tokens), then the better mean.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field
from scipy import stats

from tokengate.bench.stats import Summary, summarize
from tokengate.tune.space import Candidate, Goal, SearchSpace
from tokengate.tune.trial import TrialRecord, TrialStatus

CONFIDENCE = 0.95
PRESSURE = ("gpu_memory_utilization", "max_num_seqs", "max_num_batched_tokens")  # lower is safer
SAMPLED = ("ttft_ms", "e2e_ms", "tpot_ms")  # per-request samples pooled over repeats, for the report

Verdict = Literal["better", "indistinguishable", "baseline-best", "no-baseline", "none"]


class Estimate(BaseModel):
    """Mean over repeats with its 95% Student-t interval (None with fewer than 2 values)."""

    n: int
    mean: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None


class Difference(BaseModel):
    """`candidate - baseline` of the objective's mean, with its Welch 95% interval."""

    difference: float
    ci_low: float | None
    ci_high: float | None
    relative: float | None  # difference / baseline mean
    distinguishable_better: bool


class ConfigResult(BaseModel):
    number: int
    candidate: Candidate
    status: TrialStatus
    objective: Estimate | None = None
    metrics: dict[str, Estimate] = Field(default_factory=dict)
    latency: dict[str, Summary] = Field(default_factory=dict)  # pooled per-request samples (bench's bootstrap)
    violations: list[str] = Field(default_factory=list)
    values: list[float] = Field(default_factory=list)  # the objective, one value per repeat
    errors: dict[str, int] = Field(default_factory=dict)  # what failed requests said, over every repeat

    @property
    def eligible(self) -> bool:
        return self.status is TrialStatus.COMPLETED and bool(self.values) and not self.violations


class Decision(BaseModel):
    verdict: Verdict
    champion: int | None = None  # the recommended trial's number
    best: int | None = None  # the highest (or lowest) mean, whether or not it is distinguishable
    baseline: int | None = None
    versus_baseline: Difference | None = None
    explanation: str


def estimate(values: Sequence[float]) -> Estimate:
    clean = [float(v) for v in values if v is not None and math.isfinite(v)]
    n = len(clean)
    if n == 0:
        return Estimate(n=0)
    mean = sum(clean) / n
    if n < 2:
        return Estimate(n=n, mean=mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(n=n, mean=mean, ci_low=mean - half, ci_high=mean + half)


def difference(candidate: Sequence[float], baseline: Sequence[float], goal: Goal) -> Difference:
    """Welch interval of mean(candidate) - mean(baseline); 'better' only when it excludes 0 the right way."""
    a, b = estimate(candidate), estimate(baseline)
    assert a.mean is not None and b.mean is not None
    diff = a.mean - b.mean
    relative = diff / b.mean if b.mean else None
    if a.n < 2 or b.n < 2:
        return Difference(difference=diff, ci_low=None, ci_high=None, relative=relative, distinguishable_better=False)
    var_a, var_b = _variance(candidate) / a.n, _variance(baseline) / b.n
    se = math.sqrt(var_a + var_b)
    if se == 0:
        low = high = diff
    else:
        df = (var_a + var_b) ** 2 / (var_a**2 / (a.n - 1) + var_b**2 / (b.n - 1))
        half = float(stats.t.ppf((1 + CONFIDENCE) / 2, df)) * se
        low, high = diff - half, diff + half
    better = low > 0 if goal is Goal.MAXIMIZE else high < 0
    return Difference(difference=diff, ci_low=low, ci_high=high, relative=relative, distinguishable_better=better)


def _variance(values: Sequence[float]) -> float:
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)


def config_result(space: SearchSpace, trial: TrialRecord) -> ConfigResult:
    measured = trial.measurements
    names = sorted({name for m in measured for name in m.metrics})
    metrics = {name: estimate([v for m in measured if (v := m.metrics.get(name)) is not None]) for name in names}
    values = [v for m in measured if (v := m.metrics.get(space.objective.metric)) is not None]
    latency = {name: summarize([v for m in measured for v in m.samples.get(name, [])]) for name in SAMPLED}
    violations = []
    if trial.status is TrialStatus.COMPLETED:
        violations = [
            problem
            for constraint in space.constraints
            if (problem := constraint.violated_by(metrics.get(constraint.metric, Estimate(n=0)).mean)) is not None
        ]
    errors: Counter[str] = Counter()
    for m in measured:
        errors.update(m.errors)
    return ConfigResult(
        number=trial.number,
        candidate=trial.candidate,
        status=trial.status,
        objective=estimate(values) if values else None,
        metrics=metrics,
        latency={k: v for k, v in latency.items() if v.n},
        violations=violations,
        values=values,
        errors=dict(errors.most_common()),
    )


def decide(space: SearchSpace, results: Sequence[ConfigResult]) -> Decision:
    """The champion: distinguishably better than the baseline, else the baseline itself."""
    goal = space.objective.goal
    eligible = [r for r in results if r.eligible]
    baseline = next((r for r in results if not r.candidate.overrides), None)
    if not eligible:
        return Decision(verdict="none", explanation="no configuration completed its workload within the constraints")
    best = _best(eligible, goal)
    if baseline is None or not baseline.eligible:
        pick = _simplest(_tied_with(best, eligible, goal), space)
        why = "the baseline has no result" if baseline is None else f"the baseline is {_state(baseline)}"
        return Decision(
            verdict="no-baseline", champion=pick.number, best=best.number,
            explanation=f"{why}; #{pick.number} ({pick.candidate.label}) is the best measured configuration",
        )  # fmt: skip
    better = [
        r for r in eligible if r is not baseline and difference(r.values, baseline.values, goal).distinguishable_better
    ]
    if not better:
        verdict: Verdict = "baseline-best" if best is baseline else "indistinguishable"
        explanation = (
            "no configuration beat the baseline"
            if best is baseline
            else f"#{best.number} ({best.candidate.label}) has the best mean, but its CI does not separate it from "
            "the baseline: keep the baseline (simpler, already proven)"
        )
        return Decision(
            verdict=verdict, champion=baseline.number, best=best.number, baseline=baseline.number,
            versus_baseline=None if best is baseline else difference(best.values, baseline.values, goal),
            explanation=explanation,
        )  # fmt: skip
    pick = _simplest(_tied_with(_best(better, goal), better, goal), space)
    versus = difference(pick.values, baseline.values, goal)
    return Decision(
        verdict="better", champion=pick.number, best=best.number, baseline=baseline.number, versus_baseline=versus,
        explanation=f"#{pick.number} ({pick.candidate.label}) beats the baseline by {versus.difference:+.4g} "
        f"{space.objective.metric} (95% CI {versus.ci_low:+.4g} to {versus.ci_high:+.4g})",
    )  # fmt: skip


def _beats(result: ConfigResult, baseline: ConfigResult, goal: Goal) -> bool:
    return difference(result.values, baseline.values, goal).distinguishable_better


def _state(result: ConfigResult) -> str:
    if result.status is TrialStatus.COMPLETED and result.violations:
        said = failures_said(result.errors)
        return "outside the constraints (" + "; ".join(result.violations) + ")" + (f"; {said}" if said else "")
    return str(result.status)


def failures_said(errors: dict[str, int]) -> str:
    """`failed requests said: "…" (3x)` for the commonest error, or "" when nothing failed."""
    if not errors:
        return ""
    message, count = max(errors.items(), key=lambda item: item[1])
    return f'failed requests said: "{message}" ({count}x)'


def _best(results: Sequence[ConfigResult], goal: Goal) -> ConfigResult:
    sign = 1 if goal is Goal.MAXIMIZE else -1
    return max(results, key=lambda r: sign * (r.objective.mean if r.objective and r.objective.mean else 0.0))


def _tied_with(best: ConfigResult, results: Sequence[ConfigResult], goal: Goal) -> list[ConfigResult]:
    """`best` and every result the data cannot separate from it."""
    return [r for r in results if r is best or not difference(best.values, r.values, goal).distinguishable_better]


def _simplest(results: Sequence[ConfigResult], space: SearchSpace) -> ConfigResult:
    sign = 1 if space.objective.goal is Goal.MAXIMIZE else -1

    def key(result: ConfigResult) -> tuple[float, ...]:
        pressure = [_number(result.candidate.overrides.get(name, space.base_value(name))) for name in PRESSURE]
        mean = result.objective.mean if result.objective and result.objective.mean is not None else 0.0
        return (len(result.candidate.overrides), *pressure, -sign * mean)

    return min(results, key=key)


def _number(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.inf  # unset: vLLM's default, assumed the largest
