"""The results store: one row per configuration, refusals that protect a search, orphans stopped on resume."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.unit.test_tune_support import make_tiny_model, stub_space
from tokengate.errors import InvalidInputError
from tokengate.processes import ProcessGroup, group_alive, process_start_ticks
from tokengate.tune.space import Candidate, SearchSpace
from tokengate.tune.store import open_store
from tokengate.tune.trial import EngineProcess, Phase, TrialRecord, TrialStatus


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


@pytest.fixture
def space(tmp_path: Path, model: Path) -> SearchSpace:
    return stub_space(tmp_path, model)


def running(number: int, engine: EngineProcess | None, overrides: dict[str, object] | None = None) -> TrialRecord:
    candidate = Candidate(overrides=overrides or {"max_num_seqs": number})  # type: ignore[arg-type]
    return TrialRecord(number=number, candidate=candidate, attempts=1, engine=engine, phase=Phase.MEASURING)


def sleeper(tmp_path: Path) -> ProcessGroup:
    """A group that outlives its parent, like an engine left behind by a SIGKILLed tokengate."""
    return ProcessGroup.start(["sleep", "300"], log_path=tmp_path / "sleep.log", die_with_parent=False)


def engine_of(process: ProcessGroup, ticks: int | None = None) -> EngineProcess:
    start = process_start_ticks(process.pid) if ticks is None else ticks
    return EngineProcess(pgid=process.pid, start_ticks=start, port=1, log_path=process.log_path, argv=["sleep"])


def test_trials_are_committed_and_read_back(space: SearchSpace) -> None:
    store = open_store(space, resume=False)
    store.save(running(1, None))
    store.journal(1).phase(Phase.WARMING_UP)
    store.close()
    reopened = open_store(space, resume=True)
    assert [(t.number, t.phase) for t in reopened.trials()] == [(1, Phase.WARMING_UP)]
    assert reopened.next_number() == 2
    reopened.close()


def test_a_configuration_is_recorded_once(space: SearchSpace) -> None:
    store = open_store(space, resume=False)
    store.save(running(1, None, {"max_num_seqs": 8}))
    with pytest.raises(sqlite3.IntegrityError):
        store.save(running(2, None, {"max_num_seqs": 8}))
    store.close()


def test_an_existing_search_needs_resume_and_the_same_space(tmp_path: Path, model: Path, space: SearchSpace) -> None:
    store = open_store(space, resume=False)
    store.save(running(1, None))
    store.close()
    with pytest.raises(InvalidInputError, match="already holds 1 trials of this search; add --resume"):
        open_store(space, resume=False)
    changed = space.model_copy(update={"repeats": 5})
    with pytest.raises(InvalidInputError, match="holds another search"):
        open_store(changed, resume=True)
    bigger_budget = space.model_copy(update={"search": space.search.model_copy(update={"budget": 7})})
    open_store(bigger_budget, resume=True).close()


def test_recover_stops_an_orphan_engine_and_marks_its_trial_interrupted(tmp_path: Path, space: SearchSpace) -> None:
    orphan = sleeper(tmp_path)
    try:
        store = open_store(space, resume=False)
        store.save(running(1, engine_of(orphan)))
        store.save(running(2, None).model_copy(update={"status": TrialStatus.COMPLETED}))
        recovered = store.recover()
        assert [(r.number, r.engine_was_running) for r in recovered] == [(1, True)]
        assert not group_alive(orphan.pid)
        assert [t.status for t in store.trials()] == [TrialStatus.INTERRUPTED, TrialStatus.COMPLETED]
        assert store.recover() == []
        store.close()
    finally:
        orphan.stop(grace_seconds=1)


def test_recover_leaves_a_process_that_reused_the_pid_alone(tmp_path: Path, space: SearchSpace) -> None:
    stranger = sleeper(tmp_path)
    try:
        ticks = process_start_ticks(stranger.pid)
        assert ticks is not None
        store = open_store(space, resume=False)
        store.save(running(1, engine_of(stranger, ticks=ticks - 1)))  # "our" engine started at another time
        recovered = store.recover()
        assert [(r.number, r.engine_was_running) for r in recovered] == [(1, False)]
        assert group_alive(stranger.pid)
        store.close()
    finally:
        stranger.stop(grace_seconds=1)
