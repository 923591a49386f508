from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tokengate.cli.main import app
from tokengate.engine.docker import compose_down, run_compose
from tokengate.errors import EngineError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


def test_schema_is_json_schema_of_the_fleet() -> None:
    result = runner.invoke(app, ["schema"])
    schema = json.loads(result.stdout)
    assert "deployments" in schema["properties"]
    assert "Deployment" in schema["$defs"]


def test_dry_run_shows_the_vllm_argv_and_the_docker_command(tmp_path: Path) -> None:
    local = runner.invoke(app, ["up", str(EXAMPLES / "fleet.yaml"), "--dry-run", "--only", "medium", "--json"])
    (argv,) = json.loads(local.stdout)
    assert argv[:3] == ["vllm", "serve", "Qwen/Qwen3-32B-AWQ"]
    assert argv[argv.index("--tensor-parallel-size") + 1] == "2"
    docker = runner.invoke(app, ["up", str(EXAMPLES / "fleet.yaml"), "--dry-run", "--runtime", "docker", "--json"])
    (compose,) = json.loads(docker.stdout)
    assert compose[:3] == ["docker", "compose", "-f"]
    assert compose[3].endswith("compose/docker-compose.yml")
    assert compose[compose.index("up") :] == ["up", "--detach", "micro", "mini", "medium", "devstral"]


def test_compose_without_an_engine_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="docker"):
        run_compose(compose_down(tmp_path / "docker-compose.yml"))


def test_up_refuses_on_check_errors(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: a, model: Qwen/Qwen3-8B, gpu: h100-sxm, gpus: [0], port: 9,\n"
                     "     engine_args: {swap-space: 4}}\n")  # fmt: skip
    result = runner.invoke(app, ["up", str(fleet)])
    assert result.exit_code == 2
    assert "--swap-space was removed" in result.output
    assert not (tmp_path / ".tokengate" / "engines").exists()


def test_status_and_down_with_nothing_running(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: a, model: m, port: 9}\n")
    status = runner.invoke(app, ["status", str(fleet), "--json"])
    (only,) = json.loads(status.stdout)
    assert (only["name"], only["running"], only["healthy"]) == ("a", False, False)
    down = runner.invoke(app, ["down", str(fleet)])
    assert "Nothing was running" in down.output
    logs = runner.invoke(app, ["logs", "a", "--fleet", str(fleet)])
    assert logs.exit_code == 2
    assert "has no log yet" in logs.output


def test_unknown_deployment_is_named(tmp_path: Path) -> None:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: a, model: m, port: 9}\n")
    result = runner.invoke(app, ["status", str(fleet), "--only", "b"])
    assert result.exit_code == 2
    assert "no deployment named b" in result.output


def test_plan_and_check_a_fleet_file() -> None:
    plans = json.loads(runner.invoke(app, ["plan", str(EXAMPLES / "fleet.yaml"), "--json"]).stdout)
    assert [p["deployment"] for p in plans] == ["micro", "mini", "medium", "devstral", "devstral-spark"]
    assert all(p["fits_one_request"] for p in plans)
    checked = runner.invoke(app, ["check", str(EXAMPLES / "fleet.yaml")])
    assert checked.exit_code == 0, checked.output


def test_status_table_never_cuts_names_or_urls_on_a_narrow_terminal(tmp_path: Path) -> None:
    """A pipe or CI log is 80 columns wide: identifiers wrap in their cell instead of ending in '…'."""
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: qwen3-coder-30b-a3b-instruct, model: m, port: 18101}\n")
    result = runner.invoke(app, ["status", str(fleet)], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert "…" not in result.output
    rows = [line.split("│")[1:-1] for line in result.output.splitlines() if line.count("│") > 2]
    name, url = ("".join(row[column].strip() for row in rows) for column in (0, 2))
    assert (name, url) == ("qwen3-coder-30b-a3b-instruct", "http://127.0.0.1:18101")
