"""The root `tokengate` command: version, help, and the one place errors become exit codes."""

from __future__ import annotations

from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from tokengate import __version__
from tokengate.cli import bench, chat, fleet, gateway, keys, plan, render, tiny_model, tune, usage, validate
from tokengate.cli.output import err_console
from tokengate.errors import EngineStartError, TokengateError


class TokengateGroup(TyperGroup):
    """Renders Tokengate's own errors as one clear message and their exit code, never a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TokengateError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
            if isinstance(exc, EngineStartError) and exc.log_tail:
                err_console.print("[dim]last lines of the engine log:[/]")
                err_console.print(exc.log_tail, markup=False, highlight=False)
            raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    cls=TokengateGroup,
    name="tokengate",
    help="Run self-hosted LLMs on vLLM well, from one fleet file.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.add_typer(tiny_model.app, name="tiny-model")
app.command("plan")(plan.plan)
app.command("check")(plan.check)
app.command("render")(render.render)
app.command("up")(fleet.up_command)
app.command("down")(fleet.down_command)
app.command("status")(fleet.status_command)
app.command("logs")(fleet.logs_command)
app.command("schema")(fleet.schema_command)
app.command("models")(plan.models)
app.command("gpus")(plan.gpus)
app.command("gateway")(gateway.gateway)
app.add_typer(keys.app, name="keys")
app.command("usage")(usage.usage)
app.command("chat")(chat.chat)
app.add_typer(bench.app, name="bench")
app.command("validate")(validate.validate)
app.command("tune")(tune.tune)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"tokengate {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
) -> None:
    """Run self-hosted LLMs on vLLM well, from one fleet file."""


def main() -> None:
    app()
