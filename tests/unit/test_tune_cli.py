"""`tokengate tune` through the CLI, on stub engines (the workload is a fake injected where bench would run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.unit.test_tune_support import FakeWorkload, make_tiny_model, space_document, write_space, write_stub
from tokengate.cli.main import app
from tokengate.tune import workload as workload_module
from tokengate.tune.space import Workload

runner = CliRunner()


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def fake_bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Workload]]:
    asked: list[Workload] = []

    def bench_workload(spec: Workload) -> FakeWorkload:
        asked.append(spec)
        return FakeWorkload()

    monkeypatch.setattr(workload_module, "bench_workload", bench_workload)
    yield asked


def space_file(tmp_path: Path, model: Path, **changes: object) -> Path:
    return write_space(tmp_path, space_document(model, write_stub(tmp_path), tmp_path / "state", **changes))


def test_tune_runs_the_search_and_prints_json(tmp_path: Path, model: Path, fake_bench: list[Workload]) -> None:
    path = space_file(tmp_path, model)
    result = runner.invoke(app, ["tune", str(path), "--json", "--report", str(tmp_path / "report")])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["decision"]["verdict"] == "better"
    assert [row["status"] for row in report["trials"]] == ["completed"] * 4 + ["infeasible"]
    assert fake_bench[0].kind == "multiturn" and fake_bench[0].args == {"sessions": 8, "turns": 3}
    assert (tmp_path / "report" / "champion.yaml").is_file()


def test_tune_prints_the_table_the_reasons_and_the_snippet(
    tmp_path: Path, model: Path, fake_bench: list[Workload]
) -> None:
    result = runner.invoke(app, ["tune", str(space_file(tmp_path, model))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "#5 infeasible: one request at max_model_len 4096 needs 4.00 MiB of KV cache" in result.stdout
    assert "better: #3 (max_num_seqs=8) beats the baseline" in result.stdout
    assert "max-num-seqs: 8" in result.stdout


def test_a_second_run_needs_resume_and_report_only_starts_nothing(
    tmp_path: Path, model: Path, fake_bench: list[Workload]
) -> None:
    path = space_file(tmp_path, model)
    assert runner.invoke(app, ["tune", str(path), "--json"]).exit_code == 0
    again = runner.invoke(app, ["tune", str(path)])
    assert again.exit_code == 2
    assert "add --resume to continue it" in again.output
    before = sorted((tmp_path / "state" / "logs").iterdir())
    report = runner.invoke(app, ["tune", str(path), "--report-only", "--json"])
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["decision"]["champion"] == 3
    resumed = runner.invoke(app, ["tune", str(path), "--resume", "--json"])
    assert resumed.exit_code == 0 and json.loads(resumed.stdout)["decision"]["champion"] == 3
    assert sorted((tmp_path / "state" / "logs").iterdir()) == before


def test_a_bad_space_file_exits_2_naming_the_field(tmp_path: Path, model: Path) -> None:
    path = space_file(tmp_path, model, objective={"metric": "speed"})
    result = runner.invoke(app, ["tune", str(path)])
    assert result.exit_code == 2
    assert "objective.metric: unknown metric 'speed'" in result.output
    assert "Traceback" not in result.output
