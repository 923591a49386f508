"""`tokengate chat`: one streamed chat request to any OpenAI-compatible server, with timings."""

from __future__ import annotations

import os
from typing import Annotated

import typer
from rich.table import Table

from tokengate.bench.client import ChatTiming, timed_chat
from tokengate.cli.output import console, print_json


def chat(
    url: Annotated[str, typer.Argument(help="Server root, e.g. http://127.0.0.1:8000 (an engine or the gateway).")],
    prompt: Annotated[str, typer.Argument(help="The user message.")] = "Say hello in one short sentence.",
    model: Annotated[str, typer.Option("--model", "-m", help="Model name the server serves.")] = "",
    max_tokens: Annotated[int, typer.Option(min=1, max=8192, help="Tokens to generate.")] = 32,
    api_key_env: Annotated[
        str, typer.Option(help="Environment variable holding the API key, if the server wants one.")
    ] = "TOKENGATE_API_KEY",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Send one chat request, stream the answer, print it with time to first token and throughput.

    Example: tokengate chat http://127.0.0.1:8101 -m tiny-qwen3 "Hello!"
    """
    if not model:
        raise typer.BadParameter("name the model the server serves", param_hint="--model")
    result = timed_chat(url.rstrip("/"), model, prompt, max_tokens=max_tokens, api_key=os.environ.get(api_key_env))
    if json_output:
        print_json(result)
    else:
        _render(model, result)


def _render(model: str, result: ChatTiming) -> None:
    table = Table(title=f"{model}", show_header=False)
    if result.reasoning:
        table.add_row("reasoning", result.reasoning)
    table.add_row("answer", result.content or "(empty: the whole output was reasoning)")
    table.add_row("tokens", f"{result.prompt_tokens} prompt, {result.completion_tokens} completion "
                  f"(finish: {result.finish_reason})")  # fmt: skip
    table.add_row("time to first token", f"{result.time_to_first_token_ms:.0f} ms")
    table.add_row("total", f"{result.total_ms:.0f} ms, {result.output_tokens_per_second:.1f} output tok/s")
    console.print(table)
