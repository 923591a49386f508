"""One trial: start the engine with a candidate, wait for health, warm up, measure, snapshot, stop — always stop.

The engine runs in its own process group (and dies with tokengate's main
thread, via the parent-death signal); its group id goes to the journal the
moment it is spawned, so a resumed search can kill it if tokengate was killed
first. A watcher stops the workload the moment the engine exits, so a crash
is classified from the engine's log with the same reasons `up` uses, and no
measurement is ever taken against a dead server.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, Field

from tokengate.bench.client import timed_chat
from tokengate.bench.server_metrics import EngineMetrics, scrape_metrics
from tokengate.engine.diagnosis import Reason, diagnose
from tokengate.engine.supervisor import check_health, engine_env
from tokengate.errors import EngineRequestError, TokengateError
from tokengate.fleet.loader import resolve_secret
from tokengate.fleet.schema import Deployment
from tokengate.plan.argv import vllm_argv
from tokengate.processes import ProcessGroup, free_port, group_alive, process_start_ticks
from tokengate.tune.prescreen import Prescreen
from tokengate.tune.space import Candidate

POLL_SECONDS = 0.5
WATCH_SECONDS = 0.2
STOP_GRACE_SECONDS = 15.0
EXIT_SETTLE_SECONDS = 3.0  # how long a failing engine gets to show that it died
LOG_SETTLE_SECONDS = 0.3  # an exiting engine may still be writing its traceback


class TrialStatus(StrEnum):
    PENDING = "pending"  # planned by a grid, not started yet
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"  # never became healthy (startup failure, classified from the log)
    CRASHED = "crashed"  # died after becoming healthy: during warm-up or the workload
    INFEASIBLE = "infeasible"  # the planner proved it cannot start; never launched
    INTERRUPTED = "interrupted"  # tokengate stopped (Ctrl-C, kill, reboot) mid-trial; re-run on resume

    @property
    def finished(self) -> bool:
        return self in {TrialStatus.COMPLETED, TrialStatus.FAILED, TrialStatus.CRASHED, TrialStatus.INFEASIBLE}


class Phase(StrEnum):
    STARTING = "starting"
    WARMING_UP = "warming-up"
    MEASURING = "measuring"
    STOPPING = "stopping"


class EngineProcess(BaseModel):
    """What a later run needs to find this engine again: its group and the leader's start time."""

    pgid: int
    start_ticks: int | None
    port: int
    log_path: Path
    argv: list[str]


class Measurement(BaseModel):
    """One run of the workload: run-level metrics (names as in `space.METRICS`) and per-request samples."""

    repeat: int = 0
    metrics: dict[str, float | None]
    samples: dict[str, list[float]] = Field(default_factory=dict)  # e.g. "ttft_ms": one value per request
    seconds: float = 0.0
    interrupted: bool = False
    errors: dict[str, int] = Field(default_factory=dict)  # what failed requests said, the commonest first


class TrialRecord(BaseModel):
    """Everything stored about one configuration's trial."""

    number: int
    candidate: Candidate
    status: TrialStatus = TrialStatus.RUNNING
    phase: Phase | None = None
    reason: Reason | None = None
    attempts: int = 0  # launches; above 1 when an interrupted trial was re-run
    prescreen: Prescreen | None = None
    engine: EngineProcess | None = None
    boot_seconds: float | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    engine_metrics: EngineMetrics | None = None
    started_at: float | None = None
    finished_at: float | None = None


class Endpoint(BaseModel):
    base_url: str
    model: str
    api_key: str | None = Field(None, exclude=True, repr=False)


# A workload runs once against a healthy engine and returns what it measured; `stop` is set if the engine dies.
Workload = Callable[[Endpoint, threading.Event], Measurement]


class TrialJournal(Protocol):
    """Where a trial reports what must survive a crash of tokengate (the store)."""

    def engine_started(self, engine: EngineProcess) -> None: ...

    def phase(self, phase: Phase, detail: str = "") -> None: ...


class TrialOutcome(BaseModel):
    status: TrialStatus
    reason: Reason | None = None
    boot_seconds: float | None = None
    measurements: list[Measurement] = Field(default_factory=list)
    engine_metrics: EngineMetrics | None = None


class TrialSettings(BaseModel):
    repeats: int = 3
    warmup_requests: int = 2
    logs_dir: Path


class _Failure(Exception):
    def __init__(self, status: TrialStatus, reason: Reason) -> None:
        super().__init__(reason.message)
        self.status = status
        self.reason = reason


def run_trial(
    deployment: Deployment, number: int, settings: TrialSettings, workload: Workload, journal: TrialJournal
) -> TrialOutcome:
    """Start, measure and stop one candidate; the engine is stopped whatever happens (Ctrl-C included)."""
    log_path = settings.logs_dir / f"trial-{number:03d}.log"
    process, endpoint = _launch(deployment, log_path, journal)
    outcome = TrialOutcome(status=TrialStatus.COMPLETED)
    try:
        outcome.boot_seconds = _wait_healthy(process, endpoint, deployment.health_timeout)
        journal.phase(Phase.WARMING_UP)
        _warm_up(process, endpoint, settings.warmup_requests)
        for repeat in range(settings.repeats):
            journal.phase(Phase.MEASURING, f"repeat {repeat + 1}/{settings.repeats}")
            outcome.measurements.append(_measure(process, endpoint, workload, repeat, settings.repeats))
        outcome.engine_metrics = scrape_metrics(endpoint.base_url)
        _ensure_alive(process, "after the workload")
    except _Failure as failure:
        outcome.status, outcome.reason = failure.status, failure.reason
    finally:
        journal.phase(Phase.STOPPING)
        process.stop(STOP_GRACE_SECONDS)
    return outcome


def _launch(deployment: Deployment, log_path: Path, journal: TrialJournal) -> tuple[ProcessGroup, Endpoint]:
    """Spawn from the calling (main) thread, on a free port, and journal the group before anything waits."""
    port = free_port()
    trial_deployment = deployment.model_copy(update={"port": port, "host": "127.0.0.1"})
    argv = vllm_argv(trial_deployment)
    env = engine_env(deployment)
    api_key = resolve_secret(deployment.api_key)  # what the trial's own requests present
    log_path.parent.mkdir(parents=True, exist_ok=True)
    _keep_earlier_log(log_path)
    log_path.write_text("")  # one log per launch
    process = ProcessGroup.start(argv, log_path=log_path, env=env)
    journal.engine_started(
        EngineProcess(pgid=process.pid, start_ticks=process_start_ticks(process.pid), port=port,
                      log_path=log_path, argv=argv)
    )  # fmt: skip
    endpoint = Endpoint(base_url=trial_deployment.base_url, model=deployment.names[0], api_key=api_key)
    return process, endpoint


def _keep_earlier_log(log_path: Path) -> None:
    """A re-run trial (tokengate died in it) keeps the log of the launch it died in, as `trial-003.attempt-1.log`:
    that log may be the only record of why the machine went down."""
    if not log_path.exists() or not log_path.stat().st_size:
        return
    attempt = 1
    while (kept := log_path.with_name(f"{log_path.stem}.attempt-{attempt}.log")).exists():
        attempt += 1
    log_path.rename(kept)


def _wait_healthy(process: ProcessGroup, endpoint: Endpoint, timeout: float) -> float:
    started = time.monotonic()
    while True:
        elapsed = time.monotonic() - started
        if not process.is_running():
            raise _Failure(TrialStatus.FAILED, _died(process, "before becoming healthy"))
        if check_health(endpoint.base_url):
            return elapsed
        if elapsed > timeout:
            reason = diagnose(_log(process)) or Reason(
                code="timeout",
                message=f"no healthy /health after {timeout:.0f} s",
                fix=f"raise health_timeout, or read the log: {process.log_path}",
            )
            raise _Failure(TrialStatus.FAILED, reason)
        time.sleep(POLL_SECONDS)


def _warm_up(process: ProcessGroup, endpoint: Endpoint, requests: int) -> None:
    for _ in range(requests):
        try:
            timed_chat(endpoint.base_url, endpoint.model, "Warm up.", max_tokens=8, api_key=endpoint.api_key)
        except EngineRequestError as exc:
            _ensure_alive(process, "during the warm-up")
            raise _Failure(
                TrialStatus.FAILED,
                Reason(code="warm-up", message=f"a warm-up request failed: {exc}", fix="check the served model name"),
            ) from None


def _measure(process: ProcessGroup, endpoint: Endpoint, workload: Workload, repeat: int, repeats: int) -> Measurement:
    """One workload run, watched: if the engine exits, the workload is told to stop and the trial crashed."""
    when = f"during the workload (repeat {repeat + 1} of {repeats})"
    _ensure_alive(process, f"before repeat {repeat + 1}")
    if not check_health(endpoint.base_url):
        raise _Failure(TrialStatus.CRASHED, Reason(
            code="unhealthy", message=f"/health stopped answering before repeat {repeat + 1}",
            fix=f"read the log: {process.log_path}",
        ))  # fmt: skip
    stop, done = threading.Event(), threading.Event()
    watcher = threading.Thread(target=_watch, args=(process, stop, done), daemon=True, name="tune-engine-watch")
    watcher.start()
    started = time.monotonic()
    try:
        measurement = workload(endpoint, stop)
    except TokengateError as exc:
        _ensure_alive(process, when, grace=EXIT_SETTLE_SECONDS)
        raise _Failure(TrialStatus.FAILED, Reason(
            code="workload", message=f"the workload failed on this configuration: {exc}",
            fix="adjust workload.args, or the candidate's limits (max_model_len, max_num_seqs)",
        )) from None  # fmt: skip
    finally:
        done.set()
        watcher.join()
    metrics = measurement.metrics
    suspicious = bool(metrics.get("failed_requests")) or not metrics.get("completed_requests", 1)
    _ensure_alive(process, when, grace=EXIT_SETTLE_SECONDS if suspicious else 0.0)
    if measurement.interrupted and not stop.is_set():
        raise KeyboardInterrupt  # the workload swallowed a Ctrl-C: the search must stop, not record half a run
    if not measurement.metrics.get("completed_requests", 1):
        raise _Failure(TrialStatus.FAILED, Reason(
            code="no-success", message="no request of the workload succeeded",
            fix=f"read the log: {process.log_path}",
        ))  # fmt: skip
    return measurement.model_copy(update={"repeat": repeat, "seconds": time.monotonic() - started})


def _watch(process: ProcessGroup, stop: threading.Event, done: threading.Event) -> None:
    while not done.wait(WATCH_SECONDS):
        if not process.is_running():
            stop.set()
            return


def _ensure_alive(process: ProcessGroup, when: str, *, grace: float = 0.0) -> None:
    """Crashed if the engine has exited, or exits within `grace` seconds: a killed engine's sockets close
    before its exit is visible to `waitpid`, so failed requests can arrive a moment before the death."""
    deadline = time.monotonic() + grace
    while True:
        if not process.is_running():
            raise _Failure(TrialStatus.CRASHED, _died(process, when))
        if time.monotonic() >= deadline:
            return
        time.sleep(WATCH_SECONDS)


def _died(process: ProcessGroup, when: str) -> Reason:
    time.sleep(LOG_SETTLE_SECONDS)
    code = process.returncode
    how = f"exited with code {code}"
    fix = f"read the log: {process.log_path}"
    if code is not None and code < 0:
        name = signal.Signals(-code).name
        how = f"was killed by {name}"
        if name == "SIGKILL":
            fix = "a SIGKILL from outside is often the kernel's OOM killer (`dmesg`); " + fix
    return diagnose(_log(process)) or Reason(code="exited", message=f"vLLM {how} {when}", fix=fix)


def _log(process: ProcessGroup) -> str:
    try:
        return process.log_path.read_text(errors="replace")
    except OSError:
        return ""


def is_alive(engine: EngineProcess) -> bool:
    """The recorded group still has a live member, and its leader (if alive) is the one we started."""
    if not group_alive(engine.pgid):
        return False
    ticks = process_start_ticks(engine.pgid)
    return ticks is None or engine.start_ticks is None or ticks == engine.start_ticks
