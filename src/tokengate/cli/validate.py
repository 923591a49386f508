"""`tokengate validate`: prove a deployment works — health, chat, streaming, reasoning, tools, prefix cache, limits."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn
from rich.table import Table

from tokengate.cli.output import console, err_console, print_json
from tokengate.errors import InvalidInputError
from tokengate.fleet.engine_args import EngineArgs
from tokengate.fleet.loader import load_fleet, resolve_secret
from tokengate.fleet.schema import Deployment, Fleet
from tokengate.gateway.routing import family_of
from tokengate.models import NAME_FAMILIES, family_in_name
from tokengate.plan.checks import PARSERS
from tokengate.validate import (
    Check,
    CheckResult,
    EngineFacts,
    Parsers,
    Status,
    Target,
    ValidationReport,
    planned_checks,
    served_models,
    write_junit,
)
from tokengate.validate.suite import validate as run_validation

FAMILIES = sorted(set(PARSERS) | {family for _, family in NAME_FAMILIES})
STYLE = {Status.PASS: "[green]pass[/]", Status.FAIL: "[bold red]FAIL[/]", Status.SKIP: "[dim]skip[/]"}


def validate(
    url: Annotated[
        str | None, typer.Argument(help="Server root, e.g. http://127.0.0.1:8000 (an engine or a gateway).")
    ] = None,
    fleet_file: Annotated[
        Path | None, typer.Option("--fleet", help="Validate the fleet's deployments, judged by their engine args.")
    ] = None,
    only: Annotated[str | None, typer.Option(help="With --fleet: only this deployment.")] = None,
    gateway: Annotated[
        bool, typer.Option("--gateway", help="Go through the fleet's gateway (with a URL: the URL is a gateway).")
    ] = False,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (default: every model the server lists).")
    ] = None,
    family: Annotated[
        str | None, typer.Option(help=f"Model family when it cannot be detected: {', '.join(FAMILIES)}.")
    ] = None,
    api_key: Annotated[
        str | None, typer.Option(envvar="TOKENGATE_API_KEY", help="API key for the server or gateway.")
    ] = None,
    junit: Annotated[Path | None, typer.Option(help="Also write the results as JUnit XML to this file.")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait for each answer.")] = 120.0,
) -> None:
    """Run the checks that apply to each model: pass, fail or skip, with the reason and what to change.

    Exit code 0 when nothing failed, 1 when a check failed, 2 on bad input.

    Examples: tokengate validate http://127.0.0.1:8101 ·
    tokengate validate --fleet fleet.yaml --only medium ·
    tokengate validate --fleet fleet.yaml --gateway
    """
    if family is not None and family not in FAMILIES:
        raise InvalidInputError(
            f"--family {family!r} is not a family Tokengate knows; use one of: {', '.join(FAMILIES)}"
        )
    if url and fleet_file:
        raise InvalidInputError("give a URL or --fleet FILE, not both")
    if gateway and url is None and fleet_file is None:
        fleet_file = Path("fleet.yaml")  # the gateway of ./fleet.yaml, the file `up` and `gateway` default to
    if fleet_file is not None:
        targets = fleet_targets(
            load_fleet(fleet_file), fleet_file, only=only, gateway=gateway, model=model, family=family, api_key=api_key
        )
    elif url:
        if only:
            raise InvalidInputError("--only picks a deployment of a fleet: add --fleet FILE, or drop --only")
        targets = url_targets(url, gateway=gateway, model=model, family=family, api_key=api_key)
    else:
        raise InvalidInputError(
            "say what to validate: a URL (tokengate validate http://127.0.0.1:8000), --fleet FILE, "
            "or --gateway (the gateway of ./fleet.yaml, or of --fleet FILE)"
        )
    report = _run_with_progress(targets, timeout)
    if junit is not None:
        write_junit(report, junit)
    if json_output:
        print_json(report)
    else:
        _render(report)
    if not report.ok:
        raise typer.Exit(1)


def fleet_targets(
    fleet: Fleet,
    fleet_file: Path,
    *,
    only: str | None,
    gateway: bool,
    model: str | None,
    family: str | None,
    api_key: str | None,
) -> list[Target]:
    """One target per deployment: the engine itself, or its first served name through the gateway."""
    deployments = fleet.deployments
    if only is not None:
        names = [d.name for d in fleet.deployments]
        if only not in names:
            raise InvalidInputError(f"--only {only!r}: no such deployment in {fleet_file}; it has {', '.join(names)}")
        deployments = [fleet.deployment(only)]
    elif model is not None:
        deployments = [d for d in deployments if model in _names_for(fleet, d)]
        if not deployments:
            served = sorted({name for d in fleet.deployments for name in _names_for(fleet, d)})
            raise InvalidInputError(
                f"--model {model!r}: no deployment in {fleet_file} serves it; it serves {', '.join(served)}"
            )
    gateway_url = _gateway_url(fleet, fleet_file, api_key) if gateway else None
    targets = []
    for deployment in deployments:
        detected = family or family_of(deployment)
        targets.append(
            Target(
                name=deployment.name,
                base_url=gateway_url or deployment.base_url,
                model=model or deployment.names[0],
                api_key=api_key if gateway_url else (resolve_secret(deployment.api_key) or api_key),
                family=detected if detected != "unknown" else None,
                via_gateway=gateway_url is not None,
                engine_url=deployment.base_url if gateway_url else None,
                deployment=deployment.name,
                engine=engine_facts(deployment),
                recommended=_recommended(detected),
            )
        )
    return targets


def _names_for(fleet: Fleet, deployment: Deployment) -> list[str]:
    """A deployment's served names and the gateway route names that lead to it."""
    routes = fleet.gateway.routes if fleet.gateway else []
    return [*deployment.names, *(route.model for route in routes if route.deployment == deployment.name)]


def engine_facts(deployment: Deployment) -> EngineFacts | None:
    """What the engine args promise; None for an external engine whose args the fleet does not give."""
    args = deployment.engine_args
    if deployment.external and not (args.model_fields_set - {"passthrough"}) and not args.passthrough:
        return None
    return EngineFacts(
        reasoning_parser=args.reasoning_parser,
        tool_call_parser=args.tool_call_parser,
        auto_tool_choice=_switch(args, "enable_auto_tool_choice") is True,
        prefix_caching=_switch(args, "enable_prefix_caching") is not False,  # on by default in vLLM
        prompt_tokens_details=_switch(args, "enable_prompt_tokens_details") is True,
        max_model_len=args.max_model_len,
    )


def _switch(args: EngineArgs, name: str) -> bool | None:
    """A boolean flag as vLLM will see it: typed, or passed through as `name: true` or `no-name: true`."""
    typed = getattr(args, name, None)
    if isinstance(typed, bool) and name in args.model_fields_set:
        return typed
    for key, meaning in ((name, True), (f"no_{name}", False)):
        value = args.passthrough.get(key)
        if value is not None:
            on = value is True or str(value).lower() in {"true", "1", "yes"}
            return meaning if on else not meaning
    return None


def url_targets(url: str, *, gateway: bool, model: str | None, family: str | None, api_key: str | None) -> list[Target]:
    """The named model, else every model the server lists; the family from --family or the model's name."""
    base_url = url.rstrip("/").removesuffix("/v1")
    if model:
        served = [(model, None)]
    else:
        served = [(entry.id, entry.root) for entry in served_models(base_url, api_key)]
        if not served:
            raise InvalidInputError(f"{base_url}/v1/models lists no model; name one with --model")
    targets = []
    for name, root in served:
        detected = family or _family_from_names(name, root or "")
        targets.append(
            Target(
                name=name,
                base_url=base_url,
                model=name,
                api_key=api_key,
                family=detected,
                via_gateway=gateway,
                recommended=_recommended(detected),
            )
        )
    return targets


def _gateway_url(fleet: Fleet, fleet_file: Path, api_key: str | None) -> str:
    if fleet.gateway is None:
        raise InvalidInputError(f"--gateway: {fleet_file} has no `gateway:` section; add one or drop --gateway")
    if fleet.gateway.auth == "keys" and not api_key:
        raise InvalidInputError(
            "the gateway checks keys: pass --api-key KEY or set TOKENGATE_API_KEY "
            f"(create one with `tokengate keys create --name validate --fleet {fleet_file}`)"
        )
    host = "127.0.0.1" if fleet.gateway.host in {"0.0.0.0", "::", ""} else fleet.gateway.host
    return f"http://{host}:{fleet.gateway.port}"


def _family_from_names(*names: str) -> str | None:
    return family_in_name(" ".join(names))


def _recommended(family: str | None) -> Parsers:
    tool, reasoning = PARSERS.get(family or "", (None, None))
    return Parsers(tool_call_parser=tool, reasoning_parser=reasoning)


def _run_with_progress(targets: list[Target], timeout: float) -> ValidationReport:
    total = sum(len(planned_checks(target)) for target in targets)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, console=err_console, transient=True) as progress:
        task = progress.add_task("validating", total=total)

        def on_start(target: Target, check: Check) -> None:
            progress.update(task, description=f"{escape(target.name)}: {check.name}")

        def on_result(_result: CheckResult) -> None:
            progress.advance(task)

        return run_validation(targets, timeout=timeout, on_start=on_start, on_result=on_result)


def _render(report: ValidationReport) -> None:
    for target_report in report.targets:
        target = target_report.target
        route = f"through the gateway at {target.base_url}" if target.via_gateway else f"at {target.base_url}"
        table = Table(title=f"{escape(target.name)}: {escape(target.model)} {escape(route)}", title_justify="left")
        table.add_column("check", no_wrap=True)
        table.add_column("result", no_wrap=True)
        table.add_column("what was seen", ratio=3)
        with_fixes = any(result.fix for result in target_report.results)
        if with_fixes:
            table.add_column("what to change", ratio=2)
        for result in target_report.results:
            cells = [result.check, STYLE[result.status], escape(result.reason)]
            table.add_row(*cells, *([escape(result.fix)] if with_fixes else []))
        console.print(table)
    verdict = "[green]all passed[/]" if report.ok else f"[bold red]{report.failed} failed[/]"
    console.print(f"{verdict}: {report.passed} passed, {report.failed} failed, {report.skipped} skipped")
