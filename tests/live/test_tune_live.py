"""`tokengate tune examples/tune-cpu.yaml` on real vLLM (CPU), tiny qwen3, multi-turn workload.

One search, run the way a user would, serves every assertion (each engine boot costs ~40 s):
max_num_seqs {1, 8} x prefix caching {on, off} plus one candidate the planner proves cannot fit.
While it runs, the test SIGKILLs the engine of trial #2 in the middle of its workload (a crash), then
SIGKILLs tokengate itself in the middle of trial #3's workload, then runs `tune --resume` to the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tokengate.bench.server_metrics import parse_metrics
from tokengate.fleet.loader import load_fleet
from tokengate.processes import group_alive
from tokengate.testing.process_scan import processes_mentioning
from tokengate.testing.vllm_server import vllm_python
from tokengate.tune.trial import EngineProcess, Phase, TrialRecord, TrialStatus

pytestmark = pytest.mark.live

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tune-cpu.yaml"
PHASE_TIMEOUT_SECONDS = 420
MEASURING_FALLBACK_SECONDS = 1.0


@dataclass
class Scenario:
    state: Path
    report_dir: Path
    first_exit: int
    crashed_engine: EngineProcess
    interrupted_engine: EngineProcess
    resumed: dict[str, Any]
    resumed_exit: int
    trials: list[TrialRecord]
    leftovers: list[str]


def read_trials(state: Path) -> list[TrialRecord]:
    database = state / "tune.sqlite"
    if not database.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(database, timeout=5)) as db:
            rows = db.execute("SELECT record FROM trials ORDER BY number").fetchall()
    except sqlite3.OperationalError:
        return []  # the schema is not there yet
    return [TrialRecord.model_validate_json(row[0]) for row in rows]


def requests_running(port: int) -> bool:
    try:
        metrics = parse_metrics(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text)
    except httpx.HTTPError:
        return False
    return bool(metrics.requests_running)


def wait_for(
    condition: Callable[[], EngineProcess | None], what: str, cli: subprocess.Popen[bytes], log: Path
) -> EngineProcess:
    deadline = time.monotonic() + PHASE_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        found = condition()
        if found is not None:
            return found
        if cli.poll() is not None:
            raise AssertionError(f"tokengate exited ({cli.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"no {what} within {PHASE_TIMEOUT_SECONDS} s:\n{log.read_text()[-3000:]}")


def mid_workload(state: Path, number: int) -> Callable[[], EngineProcess | None]:
    """Trial `number` is measuring and its engine has requests in flight: the middle of a workload.

    The engine's running-requests gauge is the direct sign; a trial seen measuring for a whole second also
    qualifies (the workload sends its first requests at once), so a gauge that a poll never catches cannot
    let the search finish unharmed."""
    measuring_since: float | None = None

    def check() -> EngineProcess | None:
        nonlocal measuring_since
        trial = next((t for t in read_trials(state) if t.number == number), None)
        if trial is None or trial.phase is not Phase.MEASURING or trial.engine is None:
            measuring_since = None
            return None
        measuring_since = measuring_since or time.monotonic()
        long_enough = time.monotonic() - measuring_since > MEASURING_FALLBACK_SECONDS
        return trial.engine if long_enough or requests_running(trial.engine.port) else None

    return check


def engine_processes(marker: Path) -> list[str]:
    """Live processes whose command line names the model directory: engines of this search."""
    return [f"{pid}: {cmdline[:200]}" for pid, cmdline in processes_mentioning(marker).items()
            if "tiny-model" not in cmdline]  # fmt: skip


def kill_leftovers(marker: Path) -> None:
    for line in engine_processes(marker):
        pid = int(line.split(":")[0])
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory, tiny_engine_available: None) -> Scenario:
    tmp = tmp_path_factory.mktemp("tune")
    subprocess.run(
        [sys.executable, "-m", "tokengate", "tiny-model", "create", str(tmp / "tiny-qwen3"), "--family", "qwen3"],
        check=True, capture_output=True,
    )  # fmt: skip
    state, report_dir, log = tmp / "state", tmp / "report", tmp / "tune-first.log"
    env = {**os.environ, "TOKENGATE_VLLM_PYTHON": str(vllm_python()), "TOKENGATE_DEMO_MODELS": str(tmp),
           "TOKENGATE_TUNE_STATE": str(state)}  # fmt: skip
    command = [sys.executable, "-m", "tokengate", "tune", str(EXAMPLE), "--report", str(report_dir)]
    with log.open("wb") as output:
        cli = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        crashed = wait_for(mid_workload(state, 2), "trial #2 mid-workload", cli, log)
        os.killpg(crashed.pgid, signal.SIGKILL)  # the engine dies under load, as the OOM killer would do it
        interrupted = wait_for(mid_workload(state, 3), "trial #3 mid-workload", cli, log)
        cli.send_signal(signal.SIGKILL)  # tokengate itself dies: no finally, no cleanup of its own
        first_exit = cli.wait()
        resumed = subprocess.run(
            [*command, "--resume", "--json"], env=env, capture_output=True, text=True, timeout=900, check=False
        )
        leftovers = engine_processes(tmp / "tiny-qwen3")
    finally:
        if cli.poll() is None:
            cli.kill()
        kill_leftovers(tmp / "tiny-qwen3")
    assert resumed.stdout.strip(), resumed.stderr[-3000:]
    return Scenario(
        state=state, report_dir=report_dir, first_exit=first_exit, crashed_engine=crashed,
        interrupted_engine=interrupted, resumed=json.loads(resumed.stdout), resumed_exit=resumed.returncode,
        trials=read_trials(state), leftovers=leftovers,
    )  # fmt: skip


def trial(scenario: Scenario, number: int) -> TrialRecord:
    return next(t for t in scenario.trials if t.number == number)


def test_every_trial_is_recorded_once_after_a_sigkill_and_resume(scenario: Scenario) -> None:
    assert scenario.first_exit == -signal.SIGKILL
    assert scenario.resumed_exit == 0
    assert [(t.number, t.candidate.label) for t in scenario.trials] == [
        (1, "baseline"),
        (2, "enable_prefix_caching=off"),
        (3, "max_num_seqs=8"),
        (4, "max_num_seqs=8 enable_prefix_caching=off"),
        (5, "max_num_seqs=8 kv_cache_memory_bytes=2097152"),
    ]
    assert [t.status for t in scenario.trials] == [
        TrialStatus.COMPLETED, TrialStatus.CRASHED, TrialStatus.COMPLETED, TrialStatus.COMPLETED,
        TrialStatus.INFEASIBLE,
    ], [(t.number, t.status, t.reason) for t in scenario.trials]  # fmt: skip
    assert [t.attempts for t in scenario.trials] == [1, 1, 2, 1, 0]  # #3 was re-run, nothing else repeated
    assert [r["number"] for r in scenario.resumed["recovered"]] == [3]
    assert len(trial(scenario, 3).measurements) == 5


def test_no_engine_outlives_the_search(scenario: Scenario) -> None:
    assert scenario.leftovers == []
    assert not group_alive(scenario.interrupted_engine.pgid)  # the engine tokengate was killed with
    for record in scenario.trials:
        assert record.engine is None or not group_alive(record.engine.pgid)


def test_the_infeasible_candidate_is_never_launched(scenario: Scenario) -> None:
    infeasible = trial(scenario, 5)
    assert infeasible.engine is None and infeasible.boot_seconds is None
    assert infeasible.reason is not None and infeasible.reason.code == "kv-cache-too-small"
    assert infeasible.prescreen is not None and not infeasible.prescreen.feasible
    logs = sorted(p.name for p in (scenario.state / "logs").iterdir())
    # #3 ran twice: the log of the launch tokengate was killed in is kept beside the new one.
    assert logs == ["trial-001.log", "trial-002.log", "trial-003.attempt-1.log", "trial-003.log", "trial-004.log"]


def test_a_mid_run_crash_is_recorded_and_the_next_trial_gets_a_fresh_engine(scenario: Scenario) -> None:
    crashed = trial(scenario, 2)
    assert crashed.reason is not None and crashed.reason.code == "exited"
    assert "killed by SIGKILL during the workload" in crashed.reason.message
    # Repeats finished before the kill stay on record; the one the engine died in is not kept.
    died_in = re.search(r"\(repeat (\d) of 5\)", crashed.reason.message)
    assert died_in is not None, crashed.reason.message
    assert [kept.repeat for kept in crashed.measurements] == list(range(int(died_in.group(1)) - 1))
    for kept in crashed.measurements:
        assert not kept.interrupted and kept.metrics["failed_requests"] == 0, kept.metrics
    fresh = scenario.interrupted_engine  # trial #3's first engine: healthy and serving after #2 crashed
    assert fresh.pgid != scenario.crashed_engine.pgid
    assert trial(scenario, 4).engine is not None and trial(scenario, 4).engine.pgid != fresh.pgid  # type: ignore[union-attr]


def test_the_champion_has_max_num_seqs_8_and_its_ci_excludes_the_baseline(scenario: Scenario) -> None:
    decision = scenario.resumed["decision"]
    assert decision["verdict"] == "better", decision
    champion = next(row for row in scenario.resumed["trials"] if row["number"] == decision["champion"])
    assert champion["overrides"]["max_num_seqs"] == 8
    assert decision["versus_baseline"]["ci_low"] > 0
    baseline = next(row for row in scenario.resumed["trials"] if row["number"] == decision["baseline"])
    assert champion["objective"]["n"] == baseline["objective"]["n"] == 5
    fleet = load_fleet(scenario.report_dir / "champion.yaml")
    assert fleet.deployments[0].engine_args.max_num_seqs == 8
    for name in ("report.json", "trials.md", "objective.png", "pareto.png"):
        assert (scenario.report_dir / name).stat().st_size > 0
