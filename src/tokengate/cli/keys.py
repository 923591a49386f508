"""`tokengate keys`: create, list and revoke the gateway's API keys."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from tokengate.cli.output import console, err_console, identifier, print_json, print_json_list
from tokengate.fleet.loader import load_fleet, state_dir
from tokengate.gateway.keys import DATABASE_FILE, KeyRecord, KeyStore

FleetOption = Annotated[Path, typer.Option("--fleet", help="The fleet file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]

app = typer.Typer(help="Create, list and revoke the gateway's API keys.", no_args_is_help=True)


class CreatedKey(KeyRecord):
    key: str


def database_path(fleet_file: Path) -> Path:
    return state_dir(load_fleet(fleet_file), fleet_file) / DATABASE_FILE


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Who or what uses the key; unique.")],
    models: Annotated[str, typer.Option("--models", help='Comma-separated models it may use; "*" for all.')] = "*",
    tokens_per_day: Annotated[
        int | None, typer.Option("--tokens-per-day", help="Prompt + completion tokens per UTC day.")
    ] = None,
    max_concurrent: Annotated[int | None, typer.Option("--max-concurrent", help="Requests in flight at once.")] = None,
    fleet_file: FleetOption = Path("fleet.yaml"),
    json_output: JsonOption = False,
) -> None:
    """Create a key and print it once; only its hash is stored."""
    store = KeyStore(database_path(fleet_file))
    key, record = store.create(
        name, models=models.split(","), tokens_per_day=tokens_per_day, max_concurrent=max_concurrent
    )
    if json_output:
        print_json(CreatedKey(key=key, **record.model_dump()))
    else:
        console.print(f"Created key [bold]{record.name}[/] for models {', '.join(record.models)}:", highlight=False)
        typer.echo(key)
    err_console.print("[yellow]warning:[/] store this key now; it cannot be shown again.")


@app.command("list")
def list_keys(fleet_file: FleetOption = Path("fleet.yaml"), json_output: JsonOption = False) -> None:
    """Every key with its prefix, models, limits and state; never the key itself."""
    records = KeyStore(database_path(fleet_file)).list()
    if json_output:
        print_json_list(records)
    elif not records:
        console.print("No keys yet; create one with `tokengate keys create --name NAME`.")
    else:
        console.print(_table(records))


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="The key's name or its displayed prefix.")],
    fleet_file: FleetOption = Path("fleet.yaml"),
) -> None:
    """Revoke a key; a running gateway rejects it within a few seconds."""
    record = KeyStore(database_path(fleet_file)).revoke(name)
    console.print(f"Revoked {record.name} ({record.prefix}…).", highlight=False)


def _table(records: list[KeyRecord]) -> Table:
    table = Table(
        identifier("name"), "prefix", identifier("models"), "tokens/day", "parallel", "created (UTC)", "state"
    )
    for r in records:
        state = "[green]active[/]" if r.revoked_at is None else f"[red]revoked[/] {_when(r.revoked_at)}"
        table.add_row(
            r.name, f"{r.prefix}…", ", ".join(r.models), _limit(r.tokens_per_day), _limit(r.max_concurrent),
            _when(r.created_at), state,
        )  # fmt: skip
    return table


def _limit(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _when(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M")
