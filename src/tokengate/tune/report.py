"""What a search found, as data (JSON), a table (Markdown), two plots (PNG) and the champion as a fleet snippet.

Everything here reads a `SearchResult`; nothing runs an engine, so a report
re-renders from the store at any time (`tokengate tune SPACE --resume --report DIR`
on a finished search).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure  # the object API: no pyplot, no global backend, PNG through Agg
from pydantic import BaseModel

from tokengate.engine.diagnosis import Reason
from tokengate.fleet.schema import Deployment
from tokengate.tune.champion import ConfigResult, Decision, Estimate, failures_said
from tokengate.tune.search import SearchResult
from tokengate.tune.space import Candidate, Goal, SearchSpace
from tokengate.tune.store import Recovered
from tokengate.tune.trial import TrialStatus

THROUGHPUT = "output_tokens_per_second"
LATENCY = "ttft_ms.p90"
COLUMNS = (THROUGHPUT, "ttft_ms.p50", "ttft_ms.p90", "e2e_ms.p50", "failed_requests")
STATUS_COLOURS = {
    TrialStatus.COMPLETED: "tab:blue", TrialStatus.CRASHED: "tab:red", TrialStatus.FAILED: "tab:orange",
    TrialStatus.INFEASIBLE: "tab:gray", TrialStatus.INTERRUPTED: "tab:purple",
}  # fmt: skip


class TrialRow(BaseModel):
    number: int
    config: str
    overrides: dict[str, Any]
    status: TrialStatus
    reason: Reason | None = None
    attempts: int
    boot_seconds: float | None = None
    objective: Estimate | None = None
    metrics: dict[str, Estimate]
    violations: list[str]
    errors: dict[str, int] = {}  # what failed requests said, the commonest first
    log_path: str | None = None


class TuneReport(BaseModel):
    objective: str
    goal: Goal
    repeats: int
    strategy: str
    store: str
    trials: list[TrialRow]
    decision: Decision
    champion_snippet: str | None = None
    recovered: list[Recovered] = []  # trials a killed tokengate left running, re-run by this invocation


def build_report(result: SearchResult) -> TuneReport:
    space = result.space
    by_number = {trial.number: trial for trial in result.trials}
    rows = []
    for config in result.results:
        trial = by_number[config.number]
        rows.append(
            TrialRow(
                number=config.number, config=config.candidate.label, overrides=dict(config.candidate.overrides),
                status=config.status, reason=trial.reason, attempts=trial.attempts, boot_seconds=trial.boot_seconds,
                objective=config.objective, metrics=config.metrics, violations=config.violations, errors=config.errors,
                log_path=str(trial.engine.log_path) if trial.engine else None,
            )
        )  # fmt: skip
    champion = by_number.get(result.decision.champion) if result.decision.champion is not None else None
    return TuneReport(
        objective=space.objective.metric, goal=space.objective.goal, repeats=space.repeats,
        strategy=space.search.strategy.value, store=str(result.store_path), trials=rows, decision=result.decision,
        champion_snippet=champion_snippet(space, champion.candidate, result.decision) if champion else None,
        recovered=result.recovered,
    )  # fmt: skip


def champion_snippet(space: SearchSpace, candidate: Candidate, decision: Decision) -> str:
    """The champion as a fleet file (`deployments:` with one entry) that `tokengate up` accepts as is."""
    deployment = space.deployment(candidate)
    document = {"deployments": [_deployment_mapping(deployment)]}
    header = f"# tokengate tune: {candidate.label} ({decision.verdict}). {decision.explanation}\n"
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def _deployment_mapping(deployment: Deployment) -> dict[str, Any]:
    mapping = deployment.model_dump(mode="json", exclude_unset=True, exclude={"engine_args"})
    engine = deployment.engine_args
    args: dict[str, Any] = {}
    for name in type(engine).model_fields:
        if name in {"model", "served_model_name", "passthrough"} or name not in engine.model_fields_set:
            continue
        args[name.replace("_", "-")] = getattr(engine, name)
    args.update({name.replace("_", "-"): value for name, value in engine.passthrough.items()})
    mapping["engine_args"] = args
    return mapping


def _estimate(value: Estimate | None, digits: int = 1) -> str:
    if value is None or value.mean is None:
        return "-"
    if value.ci_low is None or value.ci_high is None:
        return f"{value.mean:.{digits}f}"
    return f"{value.mean:.{digits}f} [{value.ci_low:.{digits}f}, {value.ci_high:.{digits}f}]"


def markdown(report: TuneReport) -> str:
    """The trial table (means over repeats with 95% CIs) and the decision, as Markdown."""
    metrics = [m for m in COLUMNS if m != report.objective]
    header = ["#", "config", "status", "reason", f"{report.objective} ({report.goal})", *metrics]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in report.trials:
        problems = [*row.violations, failures_said(row.errors)]
        why = row.reason.message if row.reason else "; ".join(filter(None, problems))
        cells = [str(row.number), row.config, str(row.status), why.replace("|", "/"), _estimate(row.objective)]
        cells += [_estimate(row.metrics.get(m)) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    decision = report.decision
    lines += ["", f"**Decision: {decision.verdict}.** {decision.explanation}"]
    if report.champion_snippet:
        lines += ["", "```yaml", report.champion_snippet.rstrip(), "```"]
    return "\n".join(lines) + "\n"


def write_report(report: TuneReport, results: list[ConfigResult], directory: Path) -> list[Path]:
    """report.json, trials.md, objective.png, pareto.png and champion.yaml in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [directory / "report.json", directory / "trials.md", directory / "objective.png"]
    written[0].write_text(report.model_dump_json(indent=2) + "\n")
    written[1].write_text(markdown(report))
    plot_objective(report, written[2])
    pareto = directory / "pareto.png"
    if plot_pareto(results, pareto):
        written.append(pareto)
    if report.champion_snippet:
        written.append(directory / "champion.yaml")
        written[-1].write_text(report.champion_snippet)
    return written


def plot_objective(report: TuneReport, path: Path) -> None:
    """The objective per trial with its CI; trials without a measurement are marked at the axis with their status."""
    figure = Figure(figsize=(max(7.0, 2.1 * len(report.trials) + 1), 5.0))
    axes = figure.subplots()
    measured = [r for r in report.trials if r.objective and r.objective.mean is not None]
    floor = min((r.objective.mean for r in measured), default=0.0)  # type: ignore[union-attr]
    for row in report.trials:
        colour = STATUS_COLOURS.get(row.status, "black")
        if row.objective is None or row.objective.mean is None:
            axes.scatter([row.number], [floor], marker="x", color=colour, s=60, label=str(row.status))
            continue
        low = row.objective.mean - (row.objective.ci_low if row.objective.ci_low is not None else row.objective.mean)
        high = (row.objective.ci_high if row.objective.ci_high is not None else row.objective.mean) - row.objective.mean
        axes.errorbar([row.number], [row.objective.mean], yerr=[[low], [high]], fmt="o", color=colour, capsize=4,
                      label=str(row.status))  # fmt: skip
        if row.number == report.decision.champion:
            axes.scatter([row.number], [row.objective.mean], marker="*", s=300, color="gold", edgecolor="black",
                         zorder=3, label="champion")  # fmt: skip
    labels = [f"#{r.number}\n" + r.config.replace(" ", "\n") for r in report.trials]
    axes.set_xticks([r.number for r in report.trials], labels, fontsize=7)
    axes.set_ylabel(report.objective)
    axes.set_title(f"{report.objective} ({report.goal}): mean and 95% CI over {report.repeats} repeats", fontsize=10)
    handles, labels = axes.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    axes.legend(unique.values(), unique.keys(), fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")


def pareto_front(points: list[tuple[int, float, float]]) -> list[int]:
    """Trial numbers no other point beats on both lower latency and higher throughput."""
    front = []
    for number, latency, throughput in points:
        dominated = any(
            (lat <= latency and thr >= throughput) and (lat < latency or thr > throughput) for _, lat, thr in points
        )
        if not dominated:
            front.append(number)
    return front


def plot_pareto(results: list[ConfigResult], path: Path) -> bool:
    """Latency (p90 TTFT) against throughput, one point per completed trial; the Pareto front joined."""
    points = []
    for result in results:
        latency, throughput = result.metrics.get(LATENCY), result.metrics.get(THROUGHPUT)
        if result.status is TrialStatus.COMPLETED and latency and throughput and latency.mean and throughput.mean:
            points.append((result.number, latency.mean, throughput.mean))
    if not points:
        return False
    figure = Figure(figsize=(6.5, 4.5))
    axes = figure.subplots()
    front = set(pareto_front(points))
    labels = {r.number: r.candidate.label for r in results}
    for number, latency, throughput in points:
        axes.scatter([latency], [throughput], color="tab:green" if number in front else "tab:gray", s=50)
        axes.annotate(f"#{number} {labels[number]}", (latency, throughput), fontsize=7, xytext=(4, 4),
                      textcoords="offset points")  # fmt: skip
    line = sorted((lat, thr) for number, lat, thr in points if number in front)
    axes.plot([p[0] for p in line], [p[1] for p in line], color="tab:green", linestyle="--", label="Pareto front")
    axes.set_xlabel(f"{LATENCY} (mean over repeats)")
    axes.set_ylabel(f"{THROUGHPUT} (mean over repeats)")
    axes.set_title("Latency vs throughput (completed trials)", fontsize=10)
    axes.legend(fontsize=8)
    figure.savefig(path, dpi=110, bbox_inches="tight")
    return True
