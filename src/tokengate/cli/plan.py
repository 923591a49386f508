"""`tokengate plan` and `tokengate check`: vLLM's memory numbers and config findings before anything starts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tokengate.cli.output import console, human_bytes, identifier, print_json, print_json_list
from tokengate.fleet.engine_args import EngineArgs, parse_vllm_args
from tokengate.fleet.loader import load_fleet
from tokengate.models import find_gpu, gpu_catalog, load_model_spec, model_catalog
from tokengate.plan.checks import check_deployment
from tokengate.plan.findings import Severity, has_errors
from tokengate.plan.fleet_plan import deployment_for_check
from tokengate.plan.planner import NEWEST_KNOWN_VLLM, Deployment, Plan

ModelOption = Annotated[
    str | None, typer.Option("--model", "-m", help="Model id (bundled catalog or hub), or a local dir / config.json.")
]
GpuOption = Annotated[str, typer.Option("--gpu", help="GPU kind: rtx-3090, h100-sxm, gb10, cpu… (`tokengate gpus`).")]
GpusOption = Annotated[int | None, typer.Option("--gpus", min=1, help="GPUs available [default: the TP size].")]
VllmArgsOption = Annotated[
    str, typer.Option("--vllm-args", help='The `vllm serve` flags, quoted: "--max-model-len 32768 --tp 2".')
]
VersionOption = Annotated[str, typer.Option("--vllm-version", help="vLLM version to check against.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def _deployment(model: str | None, gpu: str, gpus: int | None, engine: EngineArgs, version: str) -> Deployment:
    reference = model or engine.model
    if not reference:
        raise typer.BadParameter("give --model, or the model as the first word of --vllm-args", param_hint="--model")
    spec = load_model_spec(reference)
    return Deployment(
        model=spec,
        gpu=find_gpu(gpu),
        gpu_count=gpus or engine.tensor_parallel_size * engine.pipeline_parallel_size,
        engine=engine,
        vllm_version=version,
    )


FleetArgument = Annotated[
    Path | None, typer.Argument(help="A fleet file: plan every deployment in it (instead of --model).")
]


def _fleet_plans(fleet_file: Path) -> list[Plan]:
    fleet = load_fleet(fleet_file)
    return [
        check_deployment(deployment_for_check(d)).model_copy(update={"deployment": d.name}) for d in fleet.deployments
    ]


def plan(
    fleet_file: FleetArgument = None,
    model: ModelOption = None,
    gpu: GpuOption = "h100-sxm",
    gpus: GpusOption = None,
    tp: Annotated[int | None, typer.Option("--tp", min=1, help="--tensor-parallel-size.")] = None,
    max_model_len: Annotated[int | None, typer.Option(min=1, help="Context length to plan for.")] = None,
    gpu_memory_utilization: Annotated[float | None, typer.Option(min=0.01, max=1.0)] = None,
    kv_cache_dtype: Annotated[str | None, typer.Option(help="auto, or fp8 to halve KV bytes.")] = None,
    kv_cache_memory_bytes: Annotated[int | None, typer.Option(min=0, help="Fixed KV size; skips the budget.")] = None,
    block_size: Annotated[int | None, typer.Option(min=1, help="[default: 16 on GPUs, 128 on the CPU]")] = None,
    enforce_eager: Annotated[bool, typer.Option("--enforce-eager", help="No CUDA graphs.")] = False,
    vllm_args: VllmArgsOption = "",
    vllm_version: VersionOption = NEWEST_KNOWN_VLLM,
    json_output: JsonOption = False,
) -> None:
    """Compute what vLLM will: weights, KV bytes per token, KV-cache tokens, concurrency, the longest context.

    Example: tokengate plan --model Qwen/Qwen3-32B-AWQ --gpu rtx-3090 --tp 2 --max-model-len 32768
    """
    if fleet_file is not None:
        plans = _fleet_plans(fleet_file)
        if json_output:
            print_json_list(plans)
        for result in [] if json_output else plans:
            _render_plan(result)
            _render_findings(result, memory_only=True)
        return
    engine = parse_vllm_args(vllm_args)
    overrides = {
        "tensor_parallel_size": tp, "max_model_len": max_model_len, "gpu_memory_utilization": gpu_memory_utilization,
        "kv_cache_dtype": kv_cache_dtype, "kv_cache_memory_bytes": kv_cache_memory_bytes,
        "block_size": block_size, "enforce_eager": enforce_eager or None,
    }  # fmt: skip
    engine = EngineArgs(
        **{**engine.model_dump(exclude_unset=True), **{k: v for k, v in overrides.items() if v is not None}}
    )
    result = check_deployment(_deployment(model, gpu, gpus, engine, vllm_version))
    if json_output:
        print_json(result)
    else:
        _render_plan(result)
        _render_findings(result, memory_only=True)


def check(
    fleet_file: FleetArgument = None,
    model: ModelOption = None,
    gpu: GpuOption = "h100-sxm",
    gpus: GpusOption = None,
    vllm_args: VllmArgsOption = "",
    vllm_version: VersionOption = NEWEST_KNOWN_VLLM,
    json_output: JsonOption = False,
) -> None:
    """Find every flag that is wrong or missing for this model and GPU, each with its fix.

    Exits 1 when a finding is an error (vLLM would refuse to start, or a feature would not work).

    Example: tokengate check --model Qwen/Qwen3-32B-AWQ --gpu rtx-3090 --gpus 2 --vllm-args "--tensor-parallel-size 2"
    """
    if fleet_file is not None:
        plans = _fleet_plans(fleet_file)
        if json_output:
            print_json_list(plans)
        for result in [] if json_output else plans:
            console.print(f"[bold]{result.deployment}[/]: {result.model_id} on {result.gpu_count} x {result.gpu}")
            _render_findings(result, memory_only=False)
        if any(has_errors(result.findings) for result in plans):
            raise typer.Exit(1)
        return
    engine = parse_vllm_args(vllm_args)
    result = check_deployment(_deployment(model, gpu, gpus, engine, vllm_version))
    if json_output:
        print_json(result)
    else:
        _render_findings(result, memory_only=False)
    if has_errors(result.findings):
        raise typer.Exit(1)


def models(json_output: JsonOption = False) -> None:
    """List the models whose config facts are bundled (usable offline with --model)."""
    entries = model_catalog()
    if json_output:
        print_json_list(entries)
        return
    table = Table(identifier("id"), "aliases")
    for entry in entries:
        table.add_row(entry.id, ", ".join(entry.aliases))
    console.print(table)


def gpus(json_output: JsonOption = False) -> None:
    """List the GPU kinds the planner knows, with memory as the runtime sees it."""
    catalog = gpu_catalog()
    if json_output:
        print_json_list(catalog)
        return
    table = Table("name", "memory", "bandwidth GB/s", "bf16 TFLOP/s", "fp8", "compute capability")
    for gpu in catalog:
        memory = human_bytes(gpu.memory_bytes) if gpu.memory_bytes else "host RAM"
        table.add_row(gpu.name, memory, f"{gpu.memory_bandwidth_gbps:g}", f"{gpu.bf16_tflops:g}",
                      "yes" if gpu.fp8 else "no", gpu.compute_capability or "-")  # fmt: skip
    console.print(table)


def _render_plan(result: Plan) -> None:
    name = f"{result.deployment}: " if result.deployment else ""
    table = Table(title=f"{name}{result.model_id} on {result.gpu_count} x {result.gpu}", show_header=False)
    table.add_row("weights", f"{human_bytes(result.weight_bytes)} ({human_bytes(result.weight_bytes_per_gpu)} per GPU)")
    for term in result.budget.terms:
        sign = "" if term.bytes >= 0 else "-"
        exact = "" if term.exact else " (estimate)"
        table.add_row(f"  {term.name}", f"{sign}{human_bytes(abs(term.bytes))}{exact}  {term.note}")
    table.add_row("available KV", human_bytes(max(result.available_kv_bytes, 0)))
    table.add_row("KV bytes per token", f"{result.kv_bytes_per_token:,} ({human_bytes(result.kv_bytes_per_token)})")
    table.add_row("KV-cache tokens", f"{result.kv_cache_tokens:,} (block size {result.block_size})")
    table.add_row("max concurrency", f"{result.max_concurrency:.2f}x at {result.max_model_len:,} tokens")
    table.add_row("one max-length request", human_bytes(result.kv_bytes_needed))
    table.add_row("longest context that fits", f"{result.max_model_len_fit:,}")
    console.print(table)
    if result.approximate:
        console.print("[dim]Terms marked (estimate) are modelled, not measured; the KV arithmetic is vLLM's.[/]")


def _render_findings(result: Plan, *, memory_only: bool) -> None:
    findings = [f for f in result.findings if not memory_only or f.code in {"kv-cache-too-small", "weights-do-not-fit"}]
    if not findings:
        if not memory_only:
            console.print("[green]No findings.[/]")
        return
    table = Table("severity", "code", "finding", "fix")
    colours = {Severity.ERROR: "red", Severity.WARNING: "yellow", Severity.INFO: "blue"}
    for finding in findings:
        colour = colours[finding.severity]
        table.add_row(f"[{colour}]{finding.severity}[/]", finding.code, finding.message, finding.fix)
    console.print(table)
