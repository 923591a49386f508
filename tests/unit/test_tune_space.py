"""The search-space file: parsing, clear errors, candidates, and the deployment each candidate becomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.unit.test_tune_support import make_tiny_model, space_document, write_space, write_stub
from tokengate.errors import InvalidInputError
from tokengate.plan.argv import vllm_argv
from tokengate.tune.space import Candidate, Range, SearchSpace, Strategy, load_space

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tune-cpu.yaml"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def load(tmp_path: Path, model: Path, **changes: Any) -> SearchSpace:
    return load_space(write_space(tmp_path, space_document(model, write_stub(tmp_path), tmp_path / "s", **changes)))


def test_the_example_space_is_the_issue_grid_plus_one_infeasible_candidate() -> None:
    space = load_space(EXAMPLE, environ={})
    labels = [c.label for c in space.grid()]
    assert labels == [
        "baseline",
        "enable_prefix_caching=off",
        "max_num_seqs=8",
        "max_num_seqs=8 enable_prefix_caching=off",
        "max_num_seqs=8 kv_cache_memory_bytes=2097152",
    ]
    assert space.state_dir == str((EXAMPLE.parent.parent / ".tokengate" / "tune" / "tune-cpu").resolve())
    assert Path(space.base.model).is_absolute()
    assert space.workload.args["sessions"] == 16


def test_grid_points_equal_to_the_base_are_the_baseline(tmp_path: Path, model: Path) -> None:
    space = load(tmp_path, model)
    grid = space.grid()
    assert grid[0] == Candidate()  # base has max_num_seqs 1 and prefix caching on: that grid point is the baseline
    assert len({c.key for c in grid}) == len(grid) == 5
    assert space.candidate({"max_num_seqs": 1, "enable_prefix_caching": True}).overrides == {}


def test_each_candidate_becomes_the_base_deployment_with_its_flags(tmp_path: Path, model: Path) -> None:
    space = load(tmp_path, model)
    deployment = space.deployment(Candidate(overrides={"max_num_seqs": 8, "enable_prefix_caching": False}), port=9)
    argv = vllm_argv(deployment)
    assert argv[argv.index("--max-num-seqs") + 1] == "8"
    assert "--no-enable-prefix-caching" in argv
    assert argv[argv.index("--port") + 1] == "9"
    assert argv[argv.index("--kv-cache-memory-bytes") + 1] == str(64 * 1024 * 1024)
    assert space.deployment(Candidate()).engine_args == space.base.engine_args


def test_ranges_give_grid_values_of_their_type() -> None:
    assert Range(low=1, high=4, step=1, integer=True).grid_values() == [1, 2, 3, 4]
    assert Range(low=0.8, high=0.95, step=0.05).grid_values() == [0.8, 0.85, 0.9, 0.95]
    with pytest.raises(ValueError, match="needs `step`"):
        Range(low=0.8, high=0.95).grid_values()


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {"objective": {"metric": "tokens_per_second"}},
            r"objective\.metric: unknown metric 'tokens_per_second'; known: ",
        ),
        ({"repeatz": 3}, r"repeatz: Extra inputs are not permitted \(check the spelling\)"),
        ({"parameters": {"gpu-memory-utilization": {"low": 0.8, "high": 0.95}}}, r"needs `step` for a grid search"),
        ({"search": {"strategy": "tpe"}}, r"search: .*tpe needs a budget"),
        ({"parameters": {"port": [1, 2]}}, r"port cannot be tuned"),
        ({"parameters": {"max-num-seqs": [0, 8]}}, r"parameters\.max_num_seqs: 0 is not valid: .*max_num_seqs"),
        ({"constraints": [{"metric": "ttft_ms.p99"}]}, r"needs `min` or `max`"),
        ({"workload": {"kind": "chat"}}, r"workload\.kind: Input should be 'multiturn' or 'sweep'"),
    ],
)
def test_bad_spaces_name_the_field_and_the_fix(
    tmp_path: Path, model: Path, changes: dict[str, Any], expected: str
) -> None:
    with pytest.raises(InvalidInputError, match=expected) as caught:
        load(tmp_path, model, **changes)
    assert "space.yaml:" in str(caught.value)


def test_a_missing_base_or_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="cannot read search-space file"):
        load_space(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("parameters: {}\n")
    with pytest.raises(InvalidInputError, match="with a `base:` deployment"):
        load_space(tmp_path / "empty.yaml")


def test_the_fingerprint_ignores_the_budget_only(tmp_path: Path, model: Path) -> None:
    tpe = load(tmp_path, model, search={"strategy": "tpe", "budget": 4})
    assert tpe.search.strategy is Strategy.TPE
    bigger = load(tmp_path, model, search={"strategy": "tpe", "budget": 9})
    more_repeats = load(tmp_path, model, search={"strategy": "tpe", "budget": 4}, repeats=5)
    assert tpe.fingerprint() == bigger.fingerprint()
    assert tpe.fingerprint() != more_repeats.fingerprint()


def test_workload_arguments_are_checked_against_bench() -> None:
    from tokengate.tune.space import Workload
    from tokengate.tune.workload import bench_workload

    assert callable(bench_workload(Workload(kind="multiturn", args={"sessions": 8, "turns": 4})))
    assert callable(bench_workload(Workload(kind="sweep", args={"concurrency": [1, 4]})))
    with pytest.raises(InvalidInputError, match=r"multiturn workload: workload\.args\.sesions: Extra inputs"):
        bench_workload(Workload(kind="multiturn", args={"sesions": 8}))


def test_a_bench_run_becomes_run_level_metrics_with_percentiles() -> None:
    from tokengate.bench.records import RequestRecord
    from tokengate.bench.run import BenchRun
    from tokengate.bench.server_metrics import ServerDeltas
    from tokengate.bench.target import BenchTarget
    from tokengate.tune.workload import measurement_from_run

    records = [RequestRecord(started_at=0, status=200, ttft_ms=float(t), e2e_ms=100.0 + t) for t in range(1, 101)]
    records.append(RequestRecord(started_at=0, status=0, error="refused", e2e_ms=1.0))
    records += [RequestRecord(started_at=0, status=500, e2e_ms=1.0) for _ in range(2)]
    run = BenchRun(
        workload="multiturn", target=BenchTarget(base_url="http://x:1", model="m"), config={}, started_at=0,
        ended_at=1, requests=records, summaries={}, scalars={"output_tokens_per_second": 1234.0},
        server=ServerDeltas(hit_rate=0.5, preemptions=0),
    )  # fmt: skip
    measurement = measurement_from_run(run)
    assert measurement.metrics["output_tokens_per_second"] == 1234.0
    assert measurement.metrics["ttft_ms.p95"] == pytest.approx(95.05)
    assert measurement.metrics["ttft_ms.mean"] == pytest.approx(50.5)
    assert measurement.metrics["prefix_cache_hit_rate"] == 0.5
    assert len(measurement.samples["ttft_ms"]) == 100  # failed requests have no latency
    assert measurement.errors == {"HTTP 500": 2, "refused": 1}  # what they said is kept, the commonest first
