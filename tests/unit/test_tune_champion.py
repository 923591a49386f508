"""Champion logic: better than the baseline only when the CI says so; otherwise the simpler, safer configuration."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from tests.unit.test_tune_support import make_tiny_model, stub_space
from tokengate.engine.diagnosis import Reason
from tokengate.tune.champion import config_result, decide, difference, estimate
from tokengate.tune.space import Candidate, Goal, SearchSpace
from tokengate.tune.trial import Measurement, TrialRecord, TrialStatus


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> SearchSpace:
    tmp = tmp_path_factory.mktemp("space")
    return stub_space(tmp, make_tiny_model(tmp))


def trial(number: int, overrides: dict[str, object], values: list[float], **extra: object) -> TrialRecord:
    measurements = [
        Measurement(repeat=i, metrics={"output_tokens_per_second": v, "failed_requests": 0.0, "ttft_ms.p90": 100.0})
        for i, v in enumerate(values)
    ]
    fields = {"status": TrialStatus.COMPLETED, "measurements": measurements, **extra}
    return TrialRecord(number=number, candidate=Candidate(overrides=overrides), **fields)  # type: ignore[arg-type]


def test_estimate_is_the_student_t_interval() -> None:
    values = [10.0, 12.0, 14.0]
    result = estimate(values)
    half = stats.t.ppf(0.975, 2) * 2.0 / math.sqrt(3)
    assert result.mean == pytest.approx(12.0)
    assert (result.ci_low, result.ci_high) == (pytest.approx(12 - half), pytest.approx(12 + half))
    assert estimate([5.0]).ci_low is None
    assert estimate([]).n == 0


def test_difference_needs_an_interval_that_excludes_zero_in_the_good_direction() -> None:
    assert difference([550, 560, 555], [140, 150, 145], Goal.MAXIMIZE).distinguishable_better
    assert not difference([150, 140, 160], [140, 150, 145], Goal.MAXIMIZE).distinguishable_better
    assert difference([90, 91, 92], [140, 150, 145], Goal.MINIMIZE).distinguishable_better
    assert not difference([550], [140], Goal.MAXIMIZE).distinguishable_better  # one repeat: no CI, no claim
    lower = difference([140, 150, 145], [550, 560, 555], Goal.MAXIMIZE)
    assert not lower.distinguishable_better and lower.ci_high is not None and lower.ci_high < 0


def test_a_clear_winner_beats_the_baseline_and_ties_go_to_the_fewest_changes(space: SearchSpace) -> None:
    trials = [
        trial(1, {}, [140, 145, 150]),
        trial(2, {"enable_prefix_caching": False}, [141, 146, 149]),
        trial(3, {"max_num_seqs": 8}, [550, 560, 555]),
        trial(4, {"max_num_seqs": 8, "enable_prefix_caching": False}, [556, 561, 558]),  # best mean, but tied with #3
    ]
    decision = decide(space, [config_result(space, t) for t in trials])
    assert decision.verdict == "better"
    assert decision.champion == 3 and decision.best == 4 and decision.baseline == 1
    assert decision.versus_baseline is not None and decision.versus_baseline.ci_low is not None
    assert decision.versus_baseline.ci_low > 0
    assert "beats the baseline" in decision.explanation


def test_an_indistinguishable_best_keeps_the_baseline(space: SearchSpace) -> None:
    trials = [trial(1, {}, [140, 150, 145]), trial(2, {"max_num_seqs": 8}, [139, 160, 152])]
    decision = decide(space, [config_result(space, t) for t in trials])
    assert decision.verdict == "indistinguishable"
    assert decision.champion == 1 and decision.best == 2
    assert "does not separate it from the baseline" in decision.explanation


def test_the_baseline_can_be_the_best(space: SearchSpace) -> None:
    trials = [trial(1, {}, [550, 560, 555]), trial(2, {"max_num_seqs": 8}, [140, 150, 145])]
    decision = decide(space, [config_result(space, t) for t in trials])
    assert decision.verdict == "baseline-best" and decision.champion == 1


def test_constraint_violations_and_failures_cannot_win(space: SearchSpace) -> None:
    failing = trial(3, {"max_num_seqs": 8}, [900, 910, 905])
    for measurement in failing.measurements:
        measurement.metrics["failed_requests"] = 2.0
    crashed = trial(
        4, {"max_num_seqs": 4}, [], status=TrialStatus.CRASHED, reason=Reason(code="exited", message="x", fix="y")
    )
    results = [config_result(space, t) for t in (trial(1, {}, [140, 150, 145]), failing, crashed)]
    assert results[1].violations == ["failed_requests 2 > 0"]
    decision = decide(space, results)
    assert decision.verdict == "baseline-best" and decision.champion == 1


def test_without_a_measured_baseline_the_best_is_named_as_such(space: SearchSpace) -> None:
    infeasible = TrialRecord(number=1, candidate=Candidate(), status=TrialStatus.INFEASIBLE)
    results = [config_result(space, t) for t in (infeasible, trial(2, {"max_num_seqs": 8}, [550, 560, 555]))]
    decision = decide(space, results)
    assert decision.verdict == "no-baseline" and decision.champion == 2
    assert "the baseline is infeasible" in decision.explanation
    assert decide(space, [config_result(space, infeasible)]).verdict == "none"


def test_a_baseline_with_failed_requests_says_what_they_said(space: SearchSpace) -> None:
    baseline = trial(1, {}, [140, 150, 145])
    baseline.measurements[0].metrics["failed_requests"] = 1.0
    baseline.measurements[0].errors = {"ServerDisconnectedError: Server disconnected": 1}
    baseline.measurements[2].metrics["failed_requests"] = 2.0
    baseline.measurements[2].errors = {"ServerDisconnectedError: Server disconnected": 1, "HTTP 400": 1}
    results = [config_result(space, t) for t in (baseline, trial(2, {"max_num_seqs": 8}, [550, 560, 555]))]
    assert results[0].errors == {"ServerDisconnectedError: Server disconnected": 2, "HTTP 400": 1}
    decision = decide(space, results)
    assert decision.verdict == "no-baseline"
    assert 'failed requests said: "ServerDisconnectedError: Server disconnected" (2x)' in decision.explanation
