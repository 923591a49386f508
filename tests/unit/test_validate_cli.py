"""`tokengate validate`: resolving a fleet or a URL into targets, bad input, outputs and exit codes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import JUnitXml
from typer.testing import CliRunner

from tests.unit.test_validate_suite import FakeServer
from tokengate.cli import validate as validate_cli
from tokengate.cli.main import app
from tokengate.fleet.loader import load_fleet
from tokengate.fleet.schema import Deployment
from tokengate.validate import Target, ValidationReport

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_ambient_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TOKENGATE_API_KEY", raising=False)


def write_fleet(tmp_path: Path, **gateway: Any) -> Path:
    fleet = {
        "deployments": [
            {
                "name": "qwen",
                "model": "Qwen/Qwen3-8B",
                "port": 8101,
                "engine_args": {
                    "max-model-len": 8192,
                    "tool-call-parser": "hermes",
                    "reasoning-parser": "qwen3",
                    "enable-auto-tool-choice": True,
                    "no-enable-prefix-caching": True,
                    "enable-prompt-tokens-details": True,
                },
            },
            {
                "name": "spark",
                "model": "mistralai/Devstral-Small-2-24B-Instruct-2512",
                "url": "http://gb10.local:8000",
                "served_model_name": ["devstral", "devstral-small"],
            },
        ],
        "gateway": {"listen": "0.0.0.0:8100", **gateway},
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


def targets(path: Path, **options: Any) -> list[Target]:
    defaults: dict[str, Any] = {"only": None, "gateway": False, "model": None, "family": None, "api_key": None}
    return validate_cli.fleet_targets(load_fleet(path), path, **(defaults | options))


def test_fleet_deployments_become_targets_judged_by_their_engine_args(tmp_path: Path) -> None:
    qwen, spark = targets(write_fleet(tmp_path))
    assert (qwen.base_url, qwen.model, qwen.family, qwen.via_gateway) == (
        "http://127.0.0.1:8101",
        "Qwen/Qwen3-8B",
        "qwen3",
        False,
    )
    assert qwen.engine is not None
    assert (qwen.engine.tool_call_parser, qwen.engine.reasoning_parser, qwen.engine.auto_tool_choice) == (
        "hermes",
        "qwen3",
        True,
    )
    assert qwen.engine.prefix_caching is False
    assert qwen.engine.prompt_tokens_details is True
    assert qwen.engine.max_model_len == 8192
    assert (spark.base_url, spark.model, spark.family) == ("http://gb10.local:8000", "devstral", "mistral")
    assert spark.engine is None  # external, no engine args: probed
    assert spark.recommended.tool_call_parser == "mistral"


def test_through_the_gateway_every_target_is_the_gateway_with_the_engine_behind_it(tmp_path: Path) -> None:
    qwen, spark = targets(write_fleet(tmp_path), gateway=True, api_key="tg-key")
    assert qwen.base_url == spark.base_url == "http://127.0.0.1:8100"  # 0.0.0.0 is reached on loopback
    assert (qwen.via_gateway, qwen.engine_url, qwen.api_key) == (True, "http://127.0.0.1:8101", "tg-key")
    assert spark.engine_url == "http://gb10.local:8000"


def test_only_and_family_and_model_override(tmp_path: Path) -> None:
    (only,) = targets(write_fleet(tmp_path), only="spark", family="qwen3", model="devstral-small")
    assert (only.name, only.model, only.family) == ("spark", "devstral-small", "qwen3")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "say what to validate"),
        (["http://x:1", "--fleet", "FLEET"], "not both"),
        (["--fleet", "FLEET", "--only", "nope"], "--only 'nope': no such deployment"),
        (["http://x:1", "--only", "qwen"], "--only picks a deployment of a fleet"),
        (["--fleet", "FLEET", "--gateway"], "TOKENGATE_API_KEY"),
        (["http://x:1", "--family", "qwen"], "--family 'qwen' is not a family"),
    ],
)
def test_bad_input_exits_2_naming_the_option(tmp_path: Path, args: list[str], message: str) -> None:
    fleet = str(write_fleet(tmp_path))
    result = runner.invoke(app, ["validate", *[fleet if a == "FLEET" else a for a in args]])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.output.split())


def test_model_with_a_fleet_picks_the_deployments_that_serve_it(tmp_path: Path) -> None:
    """Before: every deployment got the name, so all but one failed `liveness.models`."""
    path = write_fleet(tmp_path, routes=[{"model": "coder", "deployment": "spark"}])
    assert [(t.name, t.model) for t in targets(path, model="devstral-small")] == [("spark", "devstral-small")]
    assert [(t.name, t.model) for t in targets(path, model="coder", gateway=True, api_key="k")] == [("spark", "coder")]
    result = runner.invoke(app, ["validate", "--fleet", str(path), "--model", "llama"])
    assert result.exit_code == 2
    assert "--model 'llama': no deployment" in " ".join(result.output.split())
    assert "Qwen/Qwen3-8B, coder, devstral, devstral-small" in " ".join(result.output.split())


def test_gateway_alone_means_the_gateway_of_the_fleet_file_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    missing = runner.invoke(app, ["validate", "--gateway", "--api-key", "k"])
    assert missing.exit_code == 2 and "fleet.yaml" in missing.output
    write_fleet(tmp_path)
    seen: list[list[Target]] = []

    def run(found: list[Target], **_options: Any) -> ValidationReport:
        seen.append(found)
        return ValidationReport(targets=[])

    monkeypatch.setattr(validate_cli, "run_validation", run)
    assert runner.invoke(app, ["validate", "--gateway", "--api-key", "k", "--json"]).exit_code == 0
    assert [(t.name, t.base_url) for t in seen[0]] == [
        ("qwen", "http://127.0.0.1:8100"),
        ("spark", "http://127.0.0.1:8100"),
    ]


def test_gateway_without_a_gateway_section_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump({"deployments": [{"name": "a", "model": "m", "port": 8000}]}))
    result = runner.invoke(app, ["validate", "--fleet", str(path), "--gateway", "--api-key", "k"])
    assert result.exit_code == 2
    assert "has no `gateway:` section" in " ".join(result.output.split())


def test_the_demo_fleet_through_its_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENGATE_API_KEY", "tg-demo")
    found = targets(EXAMPLES / "demo.yaml", gateway=True, api_key="tg-demo")
    assert [(t.name, t.base_url, t.engine_url) for t in found] == [
        ("tiny-qwen3", "http://127.0.0.1:8100", "http://127.0.0.1:8101"),
        ("tiny-mistral", "http://127.0.0.1:8100", "http://127.0.0.1:8102"),
    ]


def _stubbed(server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    real = validate_cli.run_validation

    def run(targets: list[Target], **options: Any) -> ValidationReport:
        return real(targets, **options, transport=server.transport())

    monkeypatch.setattr(validate_cli, "run_validation", run)


def test_exit_0_json_and_junit_when_everything_passes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _stubbed(FakeServer(), monkeypatch)
    junit = tmp_path / "out.xml"
    result = runner.invoke(
        app, ["validate", "http://engine:8000", "-m", "m", "--family", "qwen3", "--json", "--junit", str(junit)]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["ok"] is True
    assert document["failed"] == 0
    assert document["targets"][0]["target"]["model"] == "m"
    assert sum(suite.tests for suite in JUnitXml.fromfile(str(junit))) == document["passed"] + document["skipped"]


def test_exit_1_and_a_table_with_the_fix_when_a_check_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    _stubbed(FakeServer(auto_tools=False), monkeypatch)
    result = runner.invoke(app, ["validate", "http://engine:8000/v1", "-m", "m"], env={"COLUMNS": "250"})
    assert result.exit_code == 1, result.output
    assert "tools.auto" in result.output
    assert "FAIL" in result.output
    assert "--enable-auto-tool-choice" in result.output
    assert "failed" in result.output.splitlines()[-1]


@pytest.mark.parametrize(
    ("engine_args", "prefix_caching", "auto_tools"),
    [
        ({}, True, False),  # vLLM's defaults: prefix caching on, auto tool choice off
        ({"enable-prefix-caching": False}, False, False),
        ({"no-enable-prefix-caching": True}, False, False),
        ({"enable_prefix_caching": True, "enable-auto-tool-choice": True}, True, True),
    ],
)
def test_engine_facts_read_every_spelling_of_a_switch(
    engine_args: dict[str, Any], prefix_caching: bool, auto_tools: bool
) -> None:
    deployment = Deployment(name="d", model="m", port=8000, engine_args=engine_args)
    facts = validate_cli.engine_facts(deployment)
    assert facts is not None
    assert (facts.prefix_caching, facts.auto_tool_choice) == (prefix_caching, auto_tools)
