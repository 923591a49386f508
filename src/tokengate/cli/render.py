"""`tokengate render`: the fleet as a compose project, Kubernetes manifests, or a `vllm serve` launch script."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from tokengate.cli.output import print_json
from tokengate.fleet.loader import load_fleet
from tokengate.fleet.schema import Fleet
from tokengate.plan.render import RenderedFiles, render_compose, render_kubernetes, render_vllm


class Target(StrEnum):
    VLLM = "vllm"
    COMPOSE = "compose"
    K8S = "k8s"


RENDERERS: dict[Target, Callable[[Fleet], RenderedFiles]] = {
    Target.VLLM: render_vllm,
    Target.COMPOSE: render_compose,
    Target.K8S: render_kubernetes,
}


def render(
    fleet_file: Annotated[Path, typer.Argument(help="The fleet file.")],
    to: Annotated[Target, typer.Option("--to", help="vllm: launch.sh; compose: docker compose; k8s: manifests.")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", file_okay=False, help="Write the files into this folder (created).")
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help='Print {"files": {name: text}}.')] = False,
) -> None:
    """Write what starts the fleet elsewhere; secrets stay ${VAR} references or Kubernetes Secret names.

    Example: tokengate render examples/fleet.yaml --to compose --out deploy/
    """
    rendered = RENDERERS[to](load_fleet(fleet_file))
    written = write_files(rendered, out) if out else []
    if json_output:
        print_json(rendered)
    elif out:
        for path in written:
            typer.echo(f"wrote {path}")
    else:
        sys.stdout.write(_concatenated(rendered))
        sys.stdout.flush()


def write_files(rendered: RenderedFiles, directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in rendered.files.items():
        path = directory / name
        path.write_text(text)
        if name.endswith(".sh"):
            path.chmod(0o755)
        written.append(path)
    return written


def _concatenated(rendered: RenderedFiles) -> str:
    if len(rendered.files) == 1:
        return next(iter(rendered.files.values()))
    return "\n".join(f"# --- {name} ---\n{text}" for name, text in rendered.files.items())
