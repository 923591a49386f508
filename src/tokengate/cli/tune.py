"""`tokengate tune SPACE.yaml`: search engine configurations with real restarts, then report the champion."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from tokengate.cli.output import console, err_console, identifier
from tokengate.tune.champion import Estimate
from tokengate.tune.report import TuneReport, build_report, write_report
from tokengate.tune.search import SearchResult, TuneEvent, load_result, run_search
from tokengate.tune.space import SearchSpace, load_space
from tokengate.tune.trial import TrialStatus

STATUS_STYLE = {
    TrialStatus.COMPLETED: "green", TrialStatus.CRASHED: "red", TrialStatus.FAILED: "red",
    TrialStatus.INFEASIBLE: "yellow", TrialStatus.INTERRUPTED: "magenta", TrialStatus.PENDING: "dim",
}  # fmt: skip


def tune(
    space_file: Annotated[Path, typer.Argument(help="The search-space file (see examples/tune-cpu.yaml).")],
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the search stored in the space's state dir.")
    ] = False,
    report_dir: Annotated[
        Path | None, typer.Option("--report", help="Write report.json, trials.md, plots and champion.yaml here.")
    ] = None,
    report_only: Annotated[
        bool, typer.Option("--report-only", help="Re-render the stored results; start nothing.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Search engine configurations with real restarts; report the champion.

    Every candidate is pre-screened by the planner; each feasible one is started, warmed up, measured
    (repeats) and stopped. Trials are stored in SQLite as they finish: --resume continues after Ctrl-C,
    a crash or a reboot. The champion beats the baseline only when its confidence interval says so.
    """
    space = load_space(space_file)
    if report_only:
        result = load_result(space)
    else:
        signal.signal(signal.SIGTERM, _interrupt)  # stop the engine and store the trial as interrupted
        try:
            result = _run_with_progress(space, resume=resume, quiet=json_output)
        except KeyboardInterrupt:
            err_console.print(f"interrupted; `tokengate tune {space_file} --resume` continues the search")
            raise typer.Exit(130) from None
    report = build_report(result)
    written = write_report(report, result.results, report_dir) if report_dir else []
    if json_output:
        sys.stdout.write(report.model_dump_json(indent=2) + "\n")
    else:
        _print(report, result, written)
    if result.decision.verdict == "none":
        raise typer.Exit(1)


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _run_with_progress(space: SearchSpace, *, resume: bool, quiet: bool) -> SearchResult:
    columns = (
        SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), TextColumn("{task.fields[eta]}"),
    )  # fmt: skip
    with Progress(*columns, console=err_console, transient=True, disable=quiet) as progress:
        task = progress.add_task("pre-screening", total=None, eta="")

        def on_event(event: TuneEvent) -> None:
            _show(progress, task, event)

        return run_search(space, resume=resume, on_event=on_event)


def _show(progress: Progress, task: TaskID, event: TuneEvent) -> None:
    eta = f"ETA {event.eta_seconds / 60:.0f} min" if event.eta_seconds and event.eta_seconds > 90 else ""
    if event.eta_seconds is not None and not eta:
        eta = f"ETA {event.eta_seconds:.0f} s"
    trial = f"#{event.number} {event.label}"
    if event.kind == "recovered":
        progress.console.print(f"[magenta]{trial}[/]: was running when tokengate stopped; {event.message}; re-run")
    elif event.kind == "infeasible":
        progress.console.print(f"[yellow]{trial}: infeasible, not launched[/] - {event.message}")
    elif event.kind == "trial-end":
        style = STATUS_STYLE.get(event.status or TrialStatus.COMPLETED, "")
        why = f" - {event.message}" if event.message else ""
        progress.console.print(f"[{style}]{trial}: {event.status}[/]{why}")
    description = {
        "trial-start": f"{trial}: starting",
        "phase": f"{trial}: {event.phase} {event.detail}".rstrip(),
        "trial-end": "next trial",
        "done": "done",
    }.get(event.kind)
    update: dict[str, object] = {"completed": event.done, "total": event.total, "eta": eta}
    if description:
        update["description"] = description
    progress.update(task, **update)  # type: ignore[arg-type]


def _cell(value: Estimate | None) -> str:
    if value is None or value.mean is None:
        return "-"
    if value.ci_low is None or value.ci_high is None:
        return f"{value.mean:.4g}"
    return f"{value.mean:.4g} [{value.ci_low:.4g}, {value.ci_high:.4g}]"


def _print(report: TuneReport, result: SearchResult, written: list[Path]) -> None:
    title = f"{len(report.trials)} trials, {report.repeats} repeats each; 95% CIs in brackets"
    table = Table("#", identifier("config"), "status", f"{report.objective} ({report.goal})", "TTFT p90 ms",
                  "E2E p50 ms", title=title)  # fmt: skip
    for row in report.trials:
        marker = " *" if row.number == report.decision.champion else ""
        table.add_row(
            f"{row.number}{marker}", row.config, f"[{STATUS_STYLE.get(row.status, '')}]{row.status}[/]",
            _cell(row.objective), _cell(row.metrics.get("ttft_ms.p90")), _cell(row.metrics.get("e2e_ms.p50")),
        )  # fmt: skip
    console.print(table)
    for row in report.trials:  # reasons in full, below the table, where they have room
        if row.reason:
            console.print(f"#{row.number} {row.status}: {row.reason.message}. Fix: {row.reason.fix}", highlight=False)
        elif row.violations:
            console.print(f"#{row.number} outside the constraints: {'; '.join(row.violations)}", highlight=False)
    console.print(f"[bold]{report.decision.verdict}[/]: {report.decision.explanation}", highlight=False)
    if report.champion_snippet:
        console.print(report.champion_snippet, markup=False, highlight=False, soft_wrap=True)
    for path in written:
        console.print(f"wrote {path}")
    console.print(f"results: {result.store_path}")
