"""The docker runtime: deployments with `runtime: docker` run from the rendered compose file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from pydantic import BaseModel

from tokengate.engine.state import StateDir
from tokengate.errors import EngineError
from tokengate.fleet.schema import Fleet
from tokengate.plan.render import render_compose

PROJECT = "tokengate"


class ComposeCommand(BaseModel):
    compose_file: Path
    argv: list[str]


def write_compose_project(fleet: Fleet, state: StateDir) -> Path:
    """Render the fleet into `<state>/compose/` and return the compose file's path."""
    folder = state.root / "compose"
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in render_compose(fleet).files.items():
        (folder / name).write_text(text)
    return folder / "docker-compose.yml"


def compose_up(compose_file: Path, services: list[str]) -> ComposeCommand:
    base = ["docker", "compose", "-f", str(compose_file), "--project-name", PROJECT]
    return ComposeCommand(compose_file=compose_file, argv=[*base, "up", "--detach", *services])


def compose_down(compose_file: Path) -> ComposeCommand:
    base = ["docker", "compose", "-f", str(compose_file), "--project-name", PROJECT]
    return ComposeCommand(compose_file=compose_file, argv=[*base, "down"])


def run_compose(command: ComposeCommand) -> None:
    if shutil.which("docker") is None:
        raise EngineError("runtime docker needs the docker CLI with the compose plugin; install Docker first")
    completed = subprocess.run(command.argv, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        detail = (completed.stderr or completed.stdout).strip().splitlines()
        raise EngineError(
            f"`{' '.join(command.argv[:2])} … {command.argv[-1]}` failed: {detail[-1] if detail else 'no output'}"
            " (is the Docker engine running and the compose plugin installed?)"
        )
