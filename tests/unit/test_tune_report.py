"""The report of a finished search: table, plots, JSON, and a champion snippet that `tokengate up` accepts."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_tune_support import FakeWorkload, make_tiny_model, stub_space
from tokengate.fleet.loader import load_fleet
from tokengate.tune.report import TuneReport, build_report, markdown, pareto_front, write_report
from tokengate.tune.search import SearchResult, run_search

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> SearchResult:
    tmp = tmp_path_factory.mktemp("search")
    return run_search(stub_space(tmp, make_tiny_model(tmp)), workload=FakeWorkload())


def test_the_report_files_are_written_and_readable(tmp_path: Path, result: SearchResult) -> None:
    report = build_report(result)
    written = write_report(report, result.results, tmp_path / "report")
    names = sorted(p.name for p in written)
    assert names == ["champion.yaml", "objective.png", "pareto.png", "report.json", "trials.md"]
    for name in ("objective.png", "pareto.png"):
        assert (tmp_path / "report" / name).read_bytes().startswith(PNG)
    again = TuneReport.model_validate_json((tmp_path / "report" / "report.json").read_text())
    assert again.decision == report.decision and len(again.trials) == 5


def test_the_table_has_statuses_reasons_and_confidence_intervals(result: SearchResult) -> None:
    table = markdown(build_report(result))
    assert "| 3 | max_num_seqs=8 | completed |  | 800.0 [792.5, 807.5] |" in table
    assert "| 5 | max_num_seqs=8 kv_cache_memory_bytes=2097152 | infeasible | one request at max_model_len" in table
    assert "**Decision: better.** #3 (max_num_seqs=8) beats the baseline by +700" in table


def test_the_champion_snippet_is_a_fleet_file_with_the_champion_flags(tmp_path: Path, result: SearchResult) -> None:
    report = build_report(result)
    assert report.champion_snippet is not None
    path = tmp_path / "champion.yaml"
    path.write_text(report.champion_snippet)
    fleet = load_fleet(path)
    (deployment,) = fleet.deployments
    base = result.space.base
    assert deployment.name == base.name and deployment.port == base.port and deployment.command == base.command
    assert deployment.engine_args.max_num_seqs == 8
    assert deployment.engine_args.enable_prefix_caching is True
    assert deployment.engine_args.kv_cache_memory_bytes == base.engine_args.kv_cache_memory_bytes


def test_pareto_front_keeps_only_undominated_points() -> None:
    points = [(1, 100.0, 300.0), (2, 120.0, 290.0), (3, 40.0, 900.0), (4, 50.0, 950.0), (5, 30.0, 200.0)]
    assert pareto_front(points) == [3, 4, 5]
