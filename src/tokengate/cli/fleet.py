"""`tokengate up`, `down`, `status`, `logs`, `schema`: run the fleet's engines and look at them."""

from __future__ import annotations

import json
import shlex
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.live import Live
from rich.table import Table

from tokengate.cli.output import console, err_console, identifier, print_json_list
from tokengate.engine.state import StateDir
from tokengate.engine.supervisor import (
    EngineResult,
    EngineStatus,
    Outcome,
    down,
    start_gateway,
    status,
    up,
    up_commands,
)
from tokengate.errors import InvalidInputError
from tokengate.fleet.loader import load_fleet, state_dir
from tokengate.fleet.schema import Fleet, Runtime
from tokengate.plan.checks import check_deployment
from tokengate.plan.findings import Severity
from tokengate.plan.fleet_plan import deployment_for_check

FleetArgument = Annotated[Path, typer.Argument(help="The fleet file.")]
OnlyOption = Annotated[list[str] | None, typer.Option("--only", help="Only this deployment (repeatable).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _load(path: Path) -> tuple[Fleet, StateDir]:
    fleet = load_fleet(path)
    return fleet, StateDir(state_dir(fleet, path))


def up_command(
    fleet_file: FleetArgument = Path("fleet.yaml"),
    only: OnlyOption = None,
    force: Annotated[bool, typer.Option("--force", help="Start even when `check` finds errors.")] = False,
    runtime: Annotated[
        Runtime | None, typer.Option(help="Run every engine this way, whatever the fleet file says.")
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the commands `up` would run; start nothing.")
    ] = False,
    with_gateway: Annotated[
        bool, typer.Option("--gateway/--no-gateway", help="Also start the fleet's gateway, when it has one.")
    ] = True,
    json_output: JsonOption = False,
) -> None:
    """Check, start each local engine in its own process group, wait for /health, report one line each.

    Engines keep running after `up` returns; `tokengate down` stops them. `runtime: docker` deployments
    run from the rendered compose file (`docker compose up --detach`).
    """
    fleet, state = _load(fleet_file)
    if runtime is not None:
        fleet = fleet.model_copy(
            update={"deployments": [d.model_copy(update={"runtime": runtime}) for d in fleet.deployments]}
        )
    if dry_run:
        commands = up_commands(fleet, state, only=only or [])
        if json_output:
            typer.echo(json.dumps(commands, indent=2))
        else:
            for argv in commands:
                typer.echo(shlex.join(argv))
        return
    if not force:
        _refuse_on_check_errors(fleet, only or [])
    with err_console.status("Starting engines…") as spinner:
        results = up(fleet, state, only=only or [], on_progress=spinner.update)
        if fleet.gateway is not None and with_gateway and not any(r.outcome is Outcome.FAILED for r in results):
            spinner.update("Starting the gateway")
            gateway_argv = [sys.executable, "-m", "tokengate", "gateway", str(fleet_file.resolve())]
            results.append(start_gateway(fleet, gateway_argv, state))
    if json_output:
        print_json_list(results)
    else:
        for result in results:
            _print_result(result)
    if any(r.outcome is Outcome.FAILED for r in results):
        raise typer.Exit(1)


def down_command(
    fleet_file: FleetArgument = Path("fleet.yaml"),
    only: OnlyOption = None,
    json_output: JsonOption = False,
) -> None:
    """Stop every engine `up` started (SIGTERM, then SIGKILL after a grace period) and clear their state."""
    fleet, state = _load(fleet_file)
    results = down(fleet, state, only=only or [])
    if json_output:
        print_json_list(results)
        return
    if not results:
        console.print("Nothing was running.")
    for result in results:
        console.print(f"{result.name}: {result.outcome}")


def status_command(
    fleet_file: FleetArgument = Path("fleet.yaml"),
    only: OnlyOption = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh every 2 s until Ctrl-C.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Health, model, uptime, pid, KV-cache usage, running/waiting requests and prefix-cache hit rate."""
    fleet, state = _load(fleet_file)
    if json_output:
        print_json_list(status(fleet, state, only=only or []))
        return
    if not watch:
        console.print(_status_table(status(fleet, state, only=only or [])))
        return
    with Live(_status_table(status(fleet, state, only=only or [])), console=console) as live:
        try:
            while True:
                time.sleep(2)
                live.update(_status_table(status(fleet, state, only=only or [])))
        except KeyboardInterrupt:
            pass


def logs_command(
    name: Annotated[str, typer.Argument(help="Deployment name.")],
    fleet_file: Annotated[Path, typer.Option("--fleet", help="The fleet file.")] = Path("fleet.yaml"),
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="Lines from the end.")] = 100,
) -> None:
    """Print a deployment's engine log."""
    fleet, state = _load(fleet_file)
    if name not in {d.name for d in fleet.deployments}:
        raise InvalidInputError(f"no deployment named {name!r} in {fleet_file}")
    path = state.log_path(name)
    if not path.is_file():
        raise InvalidInputError(f"{name} has no log yet ({path}); run `tokengate up {fleet_file}` first")
    with path.open(errors="replace") as log:
        for line in log.readlines()[-lines:]:
            typer.echo(line, nl=False)
        while follow:
            line = log.readline()
            if line:
                typer.echo(line, nl=False)
            else:
                try:
                    time.sleep(0.3)
                except KeyboardInterrupt:
                    break


def schema_command() -> None:
    """Print the fleet file's JSON Schema, for editors and CI."""
    typer.echo(json.dumps(Fleet.model_json_schema(), indent=2))


def _refuse_on_check_errors(fleet: Fleet, only: list[str]) -> None:
    problems = []
    for deployment in fleet.deployments:
        if deployment.external or (only and deployment.name not in only):
            continue
        plan = check_deployment(deployment_for_check(deployment))
        problems += [
            f"{deployment.name}: {f.message} -> {f.fix}" for f in plan.findings if f.severity is Severity.ERROR
        ]
    if problems:
        raise InvalidInputError("`check` found errors; fix them or pass --force:\n  " + "\n  ".join(problems))


def _print_result(result: EngineResult) -> None:
    seconds = f" in {result.seconds:.0f} s" if result.seconds is not None else ""
    if result.outcome is Outcome.FAILED and result.reason:
        console.print(f"[red]{result.name}: failed{seconds}[/] - {result.reason.message}. Fix: {result.reason.fix}")
        if result.reason.code in {"exited", "timeout"} and result.log_tail:
            console.print(result.log_tail, markup=False, highlight=False)
    elif result.outcome is Outcome.HEALTHY:
        console.print(f"[green]{result.name}: healthy{seconds}[/] at {result.url}")
    else:
        extra = f" ({result.reason.message})" if result.reason else ""
        console.print(f"{result.name}: {result.outcome} at {result.url}{extra}")


def _status_table(statuses: list[EngineStatus]) -> Table:
    table = Table(
        identifier("name"), "health", identifier("url"), "pid", "uptime", "KV used", "run/wait", "prefix hits"
    )
    for s in statuses:
        health = "[green]healthy[/]" if s.healthy else ("[yellow]up[/]" if s.running else "[red]down[/]")
        m = s.metrics
        rate = m.prefix_cache_hit_rate if m else None
        table.add_row(
            s.name, health, s.url, str(s.pid or "-"),
            f"{s.uptime_seconds:.0f} s" if s.uptime_seconds is not None else "-",
            f"{m.kv_cache_usage:.1%}" if m and m.kv_cache_usage is not None else "-",
            f"{m.requests_running or 0:.0f}/{m.requests_waiting or 0:.0f}" if m else "-",
            f"{rate:.1%} of {m.prefix_cache_queries:.0f}" if m and rate is not None else "-",
        )  # fmt: skip
    return table
