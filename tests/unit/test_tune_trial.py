"""One trial against a stub engine process: started, measured, classified, and always stopped."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

import pytest

from tests.unit.test_tune_support import FakeWorkload, engine_info, make_tiny_model, stub_space
from tokengate.errors import EngineRequestError, InvalidInputError
from tokengate.fleet.schema import Deployment
from tokengate.processes import group_alive
from tokengate.tune.space import Candidate
from tokengate.tune.trial import (
    Endpoint,
    EngineProcess,
    Measurement,
    Phase,
    TrialSettings,
    TrialStatus,
    run_trial,
)


class Journal:
    def __init__(self) -> None:
        self.engine: EngineProcess | None = None
        self.phases: list[tuple[Phase, str]] = []

    def engine_started(self, engine: EngineProcess) -> None:
        self.engine = engine

    def phase(self, phase: Phase, detail: str = "") -> None:
        self.phases.append((phase, detail))


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model"))


def deployment(tmp_path: Path, model: Path, seqs: int = 1, **env: str) -> Deployment:
    space = stub_space(tmp_path, model)
    base = space.deployment(Candidate(overrides={"max_num_seqs": seqs} if seqs != 1 else {}))
    return base.model_copy(update={"env": env})


def settings(tmp_path: Path, repeats: int = 3) -> TrialSettings:
    return TrialSettings(repeats=repeats, warmup_requests=1, logs_dir=tmp_path / "logs")


def test_a_healthy_engine_is_warmed_up_measured_each_repeat_and_stopped(tmp_path: Path, model: Path) -> None:
    journal, workload = Journal(), FakeWorkload()
    outcome = run_trial(deployment(tmp_path, model, 8), 7, settings(tmp_path), workload, journal)
    assert outcome.status is TrialStatus.COMPLETED, outcome.reason
    assert [m.repeat for m in outcome.measurements] == [0, 1, 2]
    assert [m.metrics["output_tokens_per_second"] for m in outcome.measurements] == [797.0, 800.0, 803.0]
    assert outcome.boot_seconds is not None and outcome.engine_metrics is not None
    assert journal.engine is not None and journal.engine.log_path == tmp_path / "logs" / "trial-007.log"
    assert {call["pid"] for call in workload.calls} == {journal.engine.pgid}
    assert [p for p, _ in journal.phases] == [Phase.WARMING_UP, *[Phase.MEASURING] * 3, Phase.STOPPING]
    assert not group_alive(journal.engine.pgid)


def test_a_startup_failure_is_classified_from_the_log_like_up_does(tmp_path: Path, model: Path) -> None:
    journal, workload = Journal(), FakeWorkload()
    outcome = run_trial(deployment(tmp_path, model, STUB_FAIL_KV_SEQS="1"), 1, settings(tmp_path), workload, journal)
    assert outcome.status is TrialStatus.FAILED
    assert outcome.reason is not None and outcome.reason.code == "kv-cache-too-small"
    assert outcome.reason.fix == "set --max-model-len 2048"
    assert workload.calls == [] and outcome.measurements == []
    assert journal.engine is not None and not group_alive(journal.engine.pgid)


def test_a_mid_run_crash_stops_the_workload_and_no_later_repeat_runs(tmp_path: Path, model: Path) -> None:
    journal, workload = Journal(), FakeWorkload(kill_when_seqs=1)
    outcome = run_trial(deployment(tmp_path, model), 2, settings(tmp_path), workload, journal)
    assert outcome.status is TrialStatus.CRASHED
    assert outcome.reason is not None and outcome.reason.code == "exited"
    assert "killed by SIGKILL during the workload (repeat 1 of 3)" in outcome.reason.message
    assert "OOM killer" in outcome.reason.fix
    assert workload.stop_seen == [True]  # the watcher told the workload to stop
    assert len(workload.calls) == 1 and outcome.measurements == []
    assert journal.engine is not None and not group_alive(journal.engine.pgid)


def test_a_request_error_from_a_dying_engine_is_a_crash_not_a_workload_failure(tmp_path: Path, model: Path) -> None:
    def kills_then_errors(endpoint: Endpoint, stop: threading.Event) -> Measurement:
        os.killpg(engine_info(endpoint)["pid"], signal.SIGKILL)
        raise EngineRequestError(f"cannot reach {endpoint.base_url}: connection refused")  # before waitpid sees it

    journal = Journal()
    outcome = run_trial(deployment(tmp_path, model), 6, settings(tmp_path), kills_then_errors, journal)
    assert outcome.status is TrialStatus.CRASHED
    assert outcome.reason is not None and "killed by SIGKILL" in outcome.reason.message


def test_an_engine_that_never_answers_times_out_and_is_stopped(tmp_path: Path, model: Path) -> None:
    silent = deployment(tmp_path, model).model_copy(
        update={"command": [sys.executable, "-c", "import time; time.sleep(120)"], "health_timeout": 1.0}
    )
    journal = Journal()
    outcome = run_trial(silent, 3, settings(tmp_path), FakeWorkload(), journal)
    assert outcome.status is TrialStatus.FAILED
    assert outcome.reason is not None and outcome.reason.code == "timeout"
    assert journal.engine is not None and not group_alive(journal.engine.pgid)


def test_a_workload_error_on_a_live_engine_fails_the_trial_only(tmp_path: Path, model: Path) -> None:
    def refuses(endpoint: Endpoint, stop: threading.Event) -> Measurement:
        raise InvalidInputError("a session can grow to about 9000 tokens but the engine's max_model_len allows 4064")

    journal = Journal()
    outcome = run_trial(deployment(tmp_path, model), 4, settings(tmp_path), refuses, journal)
    assert outcome.status is TrialStatus.FAILED
    assert outcome.reason is not None and outcome.reason.code == "workload"
    assert "9000 tokens" in outcome.reason.message
    assert journal.engine is not None and not group_alive(journal.engine.pgid)


def test_ctrl_c_inside_the_workload_stops_the_engine_and_propagates(tmp_path: Path, model: Path) -> None:
    def interrupted(endpoint: Endpoint, stop: threading.Event) -> Measurement:
        return Measurement(metrics={"completed_requests": 3.0}, interrupted=True)  # bench swallows Ctrl-C like this

    journal = Journal()
    with pytest.raises(KeyboardInterrupt):
        run_trial(deployment(tmp_path, model), 5, settings(tmp_path), interrupted, journal)
    assert journal.engine is not None and not group_alive(journal.engine.pgid)


def test_a_re_run_keeps_the_log_of_the_launch_it_replaces(tmp_path: Path, model: Path) -> None:
    """Before: a trial re-run on resume truncated trial-NNN.log, losing why the first launch ended."""
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "trial-004.log").write_text("first launch: the machine lost power here\n")
    (logs / "trial-004.attempt-1.log").write_text("an even earlier launch\n")
    outcome = run_trial(deployment(tmp_path, model, 8), 4, settings(tmp_path, repeats=1), FakeWorkload(), Journal())
    assert outcome.status is TrialStatus.COMPLETED, outcome.reason
    assert (logs / "trial-004.attempt-1.log").read_text() == "an even earlier launch\n"
    assert (logs / "trial-004.attempt-2.log").read_text() == "first launch: the machine lost power here\n"
    assert "first launch" not in (logs / "trial-004.log").read_text()
