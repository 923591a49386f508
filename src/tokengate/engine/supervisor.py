"""`up`, `down`, `status`: start the fleet's local engines, watch them become healthy, stop them all.

Each engine runs in its own process group; its group id goes to the state dir
the moment it is spawned, before any waiting, so a `down` after a crash or a
SIGKILL of tokengate still finds and stops it.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Iterable
from enum import StrEnum
from pathlib import Path

import httpx
from pydantic import BaseModel

from tokengate.bench.server_metrics import EngineMetrics, scrape_metrics
from tokengate.engine.diagnosis import Reason, diagnose
from tokengate.engine.docker import compose_down, compose_up, run_compose, write_compose_project
from tokengate.engine.state import EngineRecord, StateDir, is_running
from tokengate.errors import InvalidInputError
from tokengate.fleet.loader import resolve_secret
from tokengate.fleet.schema import Deployment, Fleet, Runtime
from tokengate.plan.argv import vllm_argv
from tokengate.processes import ProcessGroup, process_start_ticks, stop_group

POLL_SECONDS = 0.5
GATEWAY = "gateway"  # the gateway's name in the state dir
LOG_TAIL_LINES = 15


class Outcome(StrEnum):
    HEALTHY = "healthy"
    ALREADY_RUNNING = "already-running"
    EXTERNAL = "external"
    FAILED = "failed"
    STOPPED = "stopped"
    NOT_RUNNING = "not-running"


class EngineResult(BaseModel):
    name: str
    outcome: Outcome
    url: str
    seconds: float | None = None
    reason: Reason | None = None
    log_path: Path | None = None
    log_tail: str = ""


class EngineStatus(BaseModel):
    name: str
    url: str
    external: bool
    running: bool
    healthy: bool
    model: str
    pid: int | None = None
    uptime_seconds: float | None = None
    metrics: EngineMetrics | None = None


def up_commands(fleet: Fleet, state: StateDir, *, only: Iterable[str] = ()) -> list[list[str]]:
    """What `up` would run, without running it: one argv per local engine, one `docker compose` for the rest."""
    selected = [d for d in select(fleet, only) if not d.external]
    commands = [vllm_argv(d) for d in selected if d.runtime is Runtime.LOCAL]
    in_docker = [d.name for d in selected if d.runtime is Runtime.DOCKER]
    if in_docker:
        commands.append(compose_up(state.root / "compose" / "docker-compose.yml", in_docker).argv)
    return commands


def up(
    fleet: Fleet,
    state: StateDir,
    *,
    only: Iterable[str] = (),
    on_progress: Callable[[str], None] = lambda _message: None,
) -> list[EngineResult]:
    """Start every selected engine, wait for all of them, and stop the local ones that failed.

    Ctrl-C while waiting stops what this call started and re-raises.
    """
    selected = select(fleet, only)
    results: dict[str, EngineResult] = {}
    starting: dict[str, tuple[Deployment, ProcessGroup, float]] = {}
    in_docker = [d for d in selected if d.runtime is Runtime.DOCKER and not d.external]
    if in_docker:
        results.update(_up_in_docker(fleet, state, in_docker, on_progress))
    try:
        for deployment in selected:
            if deployment.name in results:
                continue
            early = _before_start(deployment, state)
            if early is not None:
                results[deployment.name] = early
                continue
            on_progress(f"starting {deployment.name}")
            starting[deployment.name] = (deployment, _spawn(deployment, state), time.monotonic())
        _wait_all(starting, state, results, on_progress)
    except BaseException:
        for name, (_, process, _) in starting.items():
            process.stop()
            state.remove(name)
        raise
    return [results[d.name] for d in selected]


def down(
    fleet: Fleet | None, state: StateDir, *, only: Iterable[str] = (), grace_seconds: float = 20.0
) -> list[EngineResult]:
    """Stop every engine the state dir knows (all of them, even ones no longer in the fleet file)."""
    wanted = set(only)
    results = []
    compose_files: set[Path] = set()
    for record in state.records():
        if wanted and record.name not in wanted:
            continue
        if record.compose_file is not None:
            compose_files.add(record.compose_file)
            state.remove(record.name)
            results.append(EngineResult(name=record.name, outcome=Outcome.STOPPED, url=record.url))
            continue
        was_running = is_running(record) and stop_group(record.pgid, grace_seconds)
        state.remove(record.name)
        outcome = Outcome.STOPPED if was_running else Outcome.NOT_RUNNING
        results.append(EngineResult(name=record.name, outcome=outcome, url=record.url, log_path=record.log_path))
    for compose_file in sorted(compose_files):
        run_compose(compose_down(compose_file))
    return results


def _up_in_docker(
    fleet: Fleet, state: StateDir, deployments: list[Deployment], on_progress: Callable[[str], None]
) -> dict[str, EngineResult]:
    compose_file = write_compose_project(fleet, state)
    on_progress(f"docker compose up {' '.join(d.name for d in deployments)}")
    run_compose(compose_up(compose_file, [d.name for d in deployments]))
    results = {}
    for deployment in deployments:
        state.save(
            EngineRecord(
                name=deployment.name, pgid=0, start_ticks=None, url=deployment.base_url,
                log_path=compose_file, argv=compose_up(compose_file, [deployment.name]).argv,
                started_at=time.time(), compose_file=compose_file,
            )
        )  # fmt: skip
        started = time.monotonic()
        while not check_health(deployment.base_url):
            if time.monotonic() - started > deployment.health_timeout:
                reason = Reason(
                    code="timeout",
                    message=f"no healthy /health after {deployment.health_timeout:.0f} s",
                    fix=f"read the container log: docker compose -f {compose_file} logs {deployment.name}",
                )
                results[deployment.name] = EngineResult(
                    name=deployment.name, outcome=Outcome.FAILED, url=deployment.base_url, reason=reason
                )
                break
            time.sleep(POLL_SECONDS * 4)
        else:
            results[deployment.name] = EngineResult(
                name=deployment.name, outcome=Outcome.HEALTHY, url=deployment.base_url,
                seconds=time.monotonic() - started,
            )  # fmt: skip
    return results


def status(fleet: Fleet, state: StateDir, *, only: Iterable[str] = ()) -> list[EngineStatus]:
    statuses = []
    for deployment in select(fleet, only):
        record = state.load(deployment.name)
        running = deployment.external or (record is not None and is_running(record))
        healthy = running and check_health(deployment.base_url)
        statuses.append(
            EngineStatus(
                name=deployment.name,
                url=deployment.base_url,
                external=deployment.external,
                running=running,
                healthy=healthy,
                model=deployment.model,
                pid=record.pgid if record and running else None,
                uptime_seconds=record.uptime_seconds if record and running else None,
                metrics=scrape_metrics(deployment.base_url) if healthy else None,
            )
        )
    return statuses


def select(fleet: Fleet, only: Iterable[str]) -> list[Deployment]:
    wanted = list(only)
    known = {d.name for d in fleet.deployments}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise InvalidInputError(f"no deployment named {', '.join(unknown)}; the fleet has {', '.join(sorted(known))}")
    return [d for d in fleet.deployments if not wanted or d.name in wanted]


def check_health(base_url: str, *, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(f"{base_url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _before_start(deployment: Deployment, state: StateDir) -> EngineResult | None:
    """An outcome without starting anything: external, already running, or a port someone else holds."""
    if deployment.external:
        outcome = Outcome.EXTERNAL
        reason = None if check_health(deployment.base_url) else _reason("unreachable", deployment)
        return EngineResult(name=deployment.name, outcome=outcome, url=deployment.base_url, reason=reason)
    record = state.load(deployment.name)
    if record is not None:
        if is_running(record):
            return EngineResult(
                name=deployment.name, outcome=Outcome.ALREADY_RUNNING, url=record.url, log_path=record.log_path
            )
        state.remove(deployment.name)  # left by a run that crashed; its processes are gone
    if deployment.port is not None and _port_taken(deployment.host, deployment.port):
        return EngineResult(
            name=deployment.name,
            outcome=Outcome.FAILED,
            url=deployment.base_url,
            reason=Reason(
                code="port-in-use",
                message=f"port {deployment.port} is already in use",
                fix=f"stop what listens on {deployment.port} (`ss -ltnp`) or change the deployment's port",
            ),
        )
    return None


def _reason(code: str, deployment: Deployment) -> Reason:
    return Reason(code=code, message=f"nothing answers {deployment.base_url}/health", fix="start that engine first")


def _port_taken(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host if host not in {"0.0.0.0", ""} else "0.0.0.0", port))
        except OSError:
            return True
    return False


def engine_env(deployment: Deployment) -> dict[str, str]:
    """The environment a deployment's vLLM runs with: ours, its `env:`, its GPUs and its API key."""
    env = {**os.environ, **deployment.env}
    if deployment.gpus:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, deployment.gpus))
    key = resolve_secret(deployment.api_key)
    if key is not None:
        env["VLLM_API_KEY"] = key
    return env


def _spawn(deployment: Deployment, state: StateDir) -> ProcessGroup:
    return spawn_recorded(deployment.name, vllm_argv(deployment), engine_env(deployment), deployment.base_url, state)


def spawn_recorded(name: str, argv: list[str], env: dict[str, str], url: str, state: StateDir) -> ProcessGroup:
    """Start a process group that outlives this call, recorded in the state dir before anything waits on it."""
    log_path = state.log_path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_text("")  # one log per run
    process = ProcessGroup.start(argv, log_path=log_path, env=env, die_with_parent=False)
    state.save(
        EngineRecord(
            name=name,
            pgid=process.pid,
            start_ticks=process_start_ticks(process.pid),
            url=url,
            log_path=log_path,
            argv=argv,
            started_at=time.time(),
        )
    )
    return process


def start_gateway(fleet: Fleet, argv: list[str], state: StateDir, *, timeout: float = 60.0) -> EngineResult:
    """Start `tokengate gateway` for the fleet as its own recorded process group and wait for its /health."""
    assert fleet.gateway is not None
    host = "127.0.0.1" if fleet.gateway.host in {"0.0.0.0", "::", ""} else fleet.gateway.host
    url = f"http://{host}:{fleet.gateway.port}"
    record = state.load(GATEWAY)
    if record is not None and is_running(record):
        return EngineResult(name=GATEWAY, outcome=Outcome.ALREADY_RUNNING, url=url, log_path=record.log_path)
    process = spawn_recorded(GATEWAY, argv, dict(os.environ), url, state)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check_health(url):
            return EngineResult(name=GATEWAY, outcome=Outcome.HEALTHY, url=url, seconds=time.monotonic() - started)
        if not process.is_running():
            break
        time.sleep(POLL_SECONDS)
    process.stop()
    state.remove(GATEWAY)
    reason = diagnose(process.log_path.read_text(errors="replace")) or Reason(
        code="gateway", message="the gateway did not become healthy", fix=f"read its log: {process.log_path}"
    )
    return EngineResult(
        name=GATEWAY, outcome=Outcome.FAILED, url=url, reason=reason, log_tail=process.log_tail(LOG_TAIL_LINES)
    )


def _wait_all(
    starting: dict[str, tuple[Deployment, ProcessGroup, float]],
    state: StateDir,
    results: dict[str, EngineResult],
    on_progress: Callable[[str], None],
) -> None:
    pending = dict(starting)
    while pending:
        for name, (deployment, process, started) in list(pending.items()):
            result = _poll(deployment, process, started)
            if result is None:
                continue
            if result.outcome is Outcome.FAILED:
                process.stop()
                state.remove(name)
            results[name] = result
            del pending[name]
            on_progress(f"{name}: {result.outcome}")
        if pending:
            time.sleep(POLL_SECONDS)


def _poll(deployment: Deployment, process: ProcessGroup, started: float) -> EngineResult | None:
    elapsed = time.monotonic() - started
    base = {"name": deployment.name, "url": deployment.base_url, "seconds": elapsed, "log_path": process.log_path}
    if not process.is_running():
        time.sleep(0.2)  # the log's last lines may still be in flight
        fallback = Reason(
            code="exited",
            message=f"vLLM exited with code {process.returncode}",
            fix=f"read the log: {process.log_path}",
        )
    elif check_health(deployment.base_url):
        return EngineResult(**base, outcome=Outcome.HEALTHY)
    elif elapsed > deployment.health_timeout:
        fallback = Reason(
            code="timeout",
            message=f"no healthy /health after {deployment.health_timeout:.0f} s",
            fix=f"raise health_timeout, or read the log: {process.log_path}",
        )
    else:
        return None
    reason = diagnose(process.log_path.read_text(errors="replace")) or fallback
    return EngineResult(**base, outcome=Outcome.FAILED, reason=reason, log_tail=process.log_tail(LOG_TAIL_LINES))
