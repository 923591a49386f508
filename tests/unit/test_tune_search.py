"""The search loop on stub engines: pre-screen, trials, crashes, resume after a SIGKILL, TPE, budgets."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.unit.test_tune_support import FakeWorkload, make_tiny_model, stub_processes, stub_space
from tokengate.errors import InvalidInputError
from tokengate.processes import group_alive
from tokengate.tune import store as store_module
from tokengate.tune.search import TuneEvent, load_result, next_tpe_candidate, run_search
from tokengate.tune.space import Candidate, SearchSpace, Strategy
from tokengate.tune.trial import TrialRecord, TrialStatus

ROOT = Path(__file__).resolve().parents[2]
DRIVER = """
import os, sys
from pathlib import Path
sys.path.insert(0, {root!r})
os.environ["STUB_IGNORE_TERM"] = "1"  # its engine survives our death, as a hung vLLM would
from tests.unit.test_tune_support import FakeWorkload
from tokengate.tune.search import run_search
from tokengate.tune.space import load_space
run_search(load_space(Path(sys.argv[1])), workload=FakeWorkload(block_when_seqs=1, ready=Path(sys.argv[2])))
"""


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def space(tmp_path: Path, model: Path) -> SearchSpace:
    return stub_space(tmp_path, model)


def by_label(trials: list[TrialRecord]) -> dict[str, TrialRecord]:
    return {t.candidate.label: t for t in trials}


def test_grid_search_prescreens_measures_and_names_the_champion(tmp_path: Path, space: SearchSpace) -> None:
    events: list[TuneEvent] = []
    workload = FakeWorkload()
    result = run_search(space, workload=workload, on_event=events.append)
    assert [(t.number, t.candidate.label, t.status) for t in result.trials] == [
        (1, "baseline", TrialStatus.COMPLETED),
        (2, "enable_prefix_caching=off", TrialStatus.COMPLETED),
        (3, "max_num_seqs=8", TrialStatus.COMPLETED),
        (4, "max_num_seqs=8 enable_prefix_caching=off", TrialStatus.COMPLETED),
        (5, "max_num_seqs=8 kv_cache_memory_bytes=2097152", TrialStatus.INFEASIBLE),
    ]
    infeasible = result.trials[4]
    assert infeasible.reason is not None and infeasible.reason.code == "kv-cache-too-small"
    assert infeasible.engine is None and infeasible.attempts == 0
    assert not (tmp_path / "state" / "logs" / "trial-005.log").exists()
    assert sorted(p.name for p in (tmp_path / "state" / "logs").iterdir()) == [f"trial-00{n}.log" for n in (1, 2, 3, 4)]
    assert not any("2097152" in call["argv"] for call in workload.calls)
    assert len(workload.calls) == 4 * 3
    assert result.decision.verdict == "better"
    assert result.decision.champion == 3  # ties with #4 (prefix caching makes no difference): fewer changes wins
    kinds = [e.kind for e in events]
    assert kinds.index("infeasible") < kinds.index("trial-start")
    assert kinds.count("trial-end") == 4 and events[-1].kind == "done"
    assert (events[-1].done, events[-1].total) == (4, 4)
    assert stub_processes(tmp_path / "stub_engine.py") == []


def test_a_crashed_trial_is_recorded_and_the_next_runs_on_a_fresh_engine(tmp_path: Path, space: SearchSpace) -> None:
    result = run_search(space, workload=FakeWorkload(kill_when_seqs=8))
    trials = by_label(result.trials)
    crashed, next_one = trials["max_num_seqs=8"], trials["max_num_seqs=8 enable_prefix_caching=off"]
    assert crashed.status is TrialStatus.CRASHED and crashed.measurements == []
    assert crashed.reason is not None and "killed by SIGKILL during the workload" in crashed.reason.message
    assert next_one.status is TrialStatus.COMPLETED and len(next_one.measurements) == 3
    assert crashed.engine is not None and next_one.engine is not None
    assert next_one.engine.pgid != crashed.engine.pgid and next_one.engine.port != crashed.engine.port
    assert result.decision.champion == next_one.number
    assert stub_processes(tmp_path / "stub_engine.py") == []


def test_resume_after_a_sigkill_stops_the_orphan_and_records_every_trial_once(
    tmp_path: Path, space: SearchSpace, monkeypatch: pytest.MonkeyPatch
) -> None:
    space_file, ready = tmp_path / "space.yaml", tmp_path / "ready"
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER.format(root=str(ROOT)))
    process = subprocess.Popen([sys.executable, str(driver), str(space_file), str(ready)], cwd=ROOT)
    try:
        for _ in range(600):
            if ready.exists() or process.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), "the first trial never reached its workload"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    orphan = int(ready.read_text())
    assert group_alive(orphan)  # it ignores the SIGTERM its dead parent sent
    with pytest.raises(InvalidInputError, match="add --resume"):
        run_search(space, workload=FakeWorkload())
    monkeypatch.setattr(store_module, "ORPHAN_GRACE_SECONDS", 0.5)
    events: list[TuneEvent] = []
    result = run_search(space, resume=True, workload=FakeWorkload(), on_event=events.append)
    assert not group_alive(orphan)
    recovered = [e for e in events if e.kind == "recovered"]
    assert [(e.number, e.message) for e in recovered] == [(1, "its engine was still running and is stopped")]
    assert [t.number for t in result.trials] == [1, 2, 3, 4, 5]
    assert [t.attempts for t in result.trials] == [2, 1, 1, 1, 0]
    assert all(t.status in {TrialStatus.COMPLETED, TrialStatus.INFEASIBLE} for t in result.trials)
    assert stub_processes(tmp_path / "stub_engine.py") == []


def test_resuming_a_finished_search_launches_nothing(space: SearchSpace) -> None:
    first = run_search(space, workload=FakeWorkload())
    again = FakeWorkload()
    second = run_search(space, resume=True, workload=again)
    assert again.calls == []
    assert second.trials == first.trials and second.decision == first.decision
    assert load_result(space).decision == first.decision


def test_a_grid_budget_caps_the_launches(space: SearchSpace) -> None:
    limited = space.model_copy(update={"search": space.search.model_copy(update={"budget": 2})})
    result = run_search(limited, workload=FakeWorkload())
    assert [t.status for t in result.trials] == [
        TrialStatus.COMPLETED, TrialStatus.COMPLETED, TrialStatus.PENDING, TrialStatus.PENDING, TrialStatus.INFEASIBLE,
    ]  # fmt: skip


def test_tpe_proposes_untried_configurations_until_the_space_is_exhausted(space: SearchSpace) -> None:
    tried: list[TrialRecord] = []
    for number in range(1, 5):
        candidate = next_tpe_candidate(space, tried)
        assert candidate is not None and candidate.key not in {t.candidate.key for t in tried}
        tried.append(TrialRecord(number=number, candidate=candidate, status=TrialStatus.INFEASIBLE))
    assert len({t.candidate.key for t in tried}) == 4
    assert next_tpe_candidate(space, tried) is None


def test_tpe_search_respects_its_budget_with_distinct_launches(space: SearchSpace) -> None:
    tpe = space.model_copy(update={"search": space.search.model_copy(update={"strategy": Strategy.TPE, "budget": 3})})
    result = run_search(tpe, workload=FakeWorkload())
    launched = [t for t in result.trials if t.attempts]
    assert len(launched) == 3 and len({t.candidate.key for t in launched}) == 3
    assert all(t.status is TrialStatus.COMPLETED for t in launched)


def test_tpe_handles_ranges(tmp_path: Path, model: Path) -> None:
    ranges = {"max-num-seqs": {"low": 1, "high": 16, "log": True}, "gpu-memory-utilization": {"low": 0.5, "high": 0.9}}
    space = stub_space(tmp_path, model, parameters=ranges, search={"strategy": "tpe", "budget": 5})
    candidate = next_tpe_candidate(space, [])
    assert candidate is not None
    assert isinstance(candidate.overrides.get("max_num_seqs", 1), int)
    assert 0.5 <= float(candidate.overrides["gpu_memory_utilization"]) <= 0.9
    assert Candidate(overrides=candidate.overrides).key == candidate.key


def test_the_engine_of_each_trial_is_gone_before_the_next_starts(tmp_path: Path, space: SearchSpace) -> None:
    seen: list[int] = []

    def on_event(event: TuneEvent) -> None:
        if event.kind == "trial-start":
            seen.append(len(stub_processes(tmp_path / "stub_engine.py")))

    run_search(space, workload=FakeWorkload(), on_event=on_event)
    assert seen == [0, 0, 0, 0]
    assert os.environ.get("STUB_IGNORE_TERM") is None
