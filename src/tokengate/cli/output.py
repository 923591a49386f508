"""Where the CLI writes: rich consoles for people, plain JSON for programs."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from pydantic import BaseModel
from rich.console import Console
from rich.table import Column

from tokengate.units import human_bytes

__all__ = ["console", "err_console", "human_bytes", "identifier", "print_json", "print_json_list"]

console = Console()
err_console = Console(stderr=True)


def print_json(result: BaseModel) -> None:
    """Write JSON on stdout without rich markup or wrapping, so pipes get exactly the document."""
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    sys.stdout.flush()


def print_json_list(results: Sequence[BaseModel]) -> None:
    sys.stdout.write("[\n" + ",\n".join(item.model_dump_json(indent=2) for item in results) + "\n]\n")
    sys.stdout.flush()


def identifier(header: str) -> Column:
    """A table column for names, URLs and models: wrapped in its cell on a narrow terminal, never cut to '…'."""
    return Column(header, overflow="fold")
