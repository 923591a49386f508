"""Where the CLI writes: rich consoles for people, plain JSON for programs."""

from __future__ import annotations

import sys

from pydantic import BaseModel
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def print_json(result: BaseModel) -> None:
    """Write JSON on stdout without rich markup or wrapping, so pipes get exactly the document."""
    sys.stdout.write(result.model_dump_json(indent=2) + "\n")
    sys.stdout.flush()


def human_bytes(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
