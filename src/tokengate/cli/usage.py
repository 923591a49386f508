"""`tokengate usage`: requests, tokens, errors and latency from the gateway's ledger."""

from __future__ import annotations

import re
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tokengate.cli.keys import database_path
from tokengate.cli.output import console, identifier, print_json_list
from tokengate.gateway.ledger import Ledger, UsageSummary

_WINDOW = re.compile(r"^(\d+)([dhm])$")
_UNIT_SECONDS = {"d": 86_400, "h": 3_600, "m": 60}


class GroupBy(StrEnum):
    KEY = "key"
    MODEL = "model"


def parse_since(value: str, now: float) -> float | None:
    """`7d`, `12h`, `30m` back from now, or `all` (None)."""
    if value == "all":
        return None
    match = _WINDOW.match(value.strip())
    if match is None or int(match[1]) == 0:
        raise typer.BadParameter(
            f"{value!r}: use a positive Nd, Nh or Nm (e.g. 7d, 12h, 30m) or all", param_hint="'--since'"
        )
    return now - int(match[1]) * _UNIT_SECONDS[match[2]]


def usage(
    fleet_file: Annotated[Path, typer.Option("--fleet", help="The fleet file.")] = Path("fleet.yaml"),
    by: Annotated[GroupBy, typer.Option("--by", help="Group by API key or by model.")] = GroupBy.KEY,
    since: Annotated[str, typer.Option("--since", help="Window back from now: Nd, Nh, Nm, or all.")] = "1d",
    json_output: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Requests, tokens, errors and median latency per key or model, from the gateway's ledger."""
    start = parse_since(since, time.time())
    ledger = Ledger(database_path(fleet_file))
    try:
        summaries = ledger.usage(by=by.value, since=start)
    finally:
        ledger.close()
    if json_output:
        print_json_list(summaries)
    elif not summaries:
        console.print(f"No requests in the ledger {'at all' if start is None else f'in the last {since}'}.")
    else:
        console.print(_table(summaries, by))
        if any(s.cached_tokens is None for s in summaries):
            console.print(
                "cached n/a: the engine did not report cached prompt tokens; start vLLM with "
                "--enable-prompt-tokens-details (engine_args: enable-prompt-tokens-details: true)",
                highlight=False,
            )


def _table(summaries: list[UsageSummary], by: GroupBy) -> Table:
    table = Table(identifier(by.value), "requests", "prompt", "cached", "completion", "errors", "p50 latency")
    for s in summaries:
        table.add_row(
            s.group if s.group is not None else "(no key)", f"{s.requests:,}", f"{s.prompt_tokens:,}",
            "n/a" if s.cached_tokens is None else f"{s.cached_tokens:,}", f"{s.completion_tokens:,}",
            f"[red]{s.errors:,}[/]" if s.errors else "0", f"{s.p50_latency_ms:,.0f} ms",
        )  # fmt: skip
    return table
