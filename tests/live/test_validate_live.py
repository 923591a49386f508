"""`tokengate validate` against real vLLM (CPU): it passes on the tiny qwen3 and mistral deployments, directly and
through the gateway, and fails with the right flags on qwen3 started without auto tool choice or prefix caching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from junitparser import Failure, JUnitXml

from tests.live.test_gateway_live import RunningGateway
from tokengate.gateway.keys import KeyStore
from tokengate.testing.tiny_model import Family, serve_args_for
from tokengate.testing.vllm_server import STRUCTURED_OUTPUTS_CONFIG, VllmServer, free_port
from tokengate.validate import EngineFacts, Status, Target, TargetReport, ValidationReport, validate

pytestmark = pytest.mark.live

MISTRAL_CASES = {
    "mistral.tool_call_index",
    "mistral.malformed_tool_arguments",
    "mistral.empty_assistant_message",
    "mistral.tool_call_id_format",
    "mistral.tool_choice_without_tools",
}
TOOL_CHECKS = {"tools.named", "tools.named_stream", "tools.auto", "tools.round_trip"}


def statuses(report: ValidationReport | TargetReport) -> dict[str, Status]:
    return {result.check: result.status for result in report.results}


def not_passed(report: ValidationReport) -> dict[str, str]:
    return {f"{r.target}/{r.check}": f"{r.status}: {r.reason}" for r in report.results if r.status is not Status.PASS}


def engine_args(family: Family) -> dict[str, Any]:
    """The fleet spelling of how conftest starts the tiny servers (tokengate.testing.vllm_server)."""
    args: dict[str, Any] = {"max-model-len": 8192, "structured-outputs-config": json.loads(STRUCTURED_OUTPUTS_CONFIG)}
    flags = serve_args_for(family)
    for index, flag in enumerate(flags):
        if flag.startswith("--"):
            following = flags[index + 1] if index + 1 < len(flags) else "--"
            args[flag[2:]] = True if following.startswith("--") else following
    return args


@pytest.fixture(scope="module")
def gateway_fleet(
    tmp_path_factory: pytest.TempPathFactory, qwen3_server: VllmServer, mistral_server: VllmServer
) -> Iterator[tuple[Path, str]]:
    """Both tiny engines as external deployments (with the engine args they run with) behind a keyed gateway."""
    folder = tmp_path_factory.mktemp("validate-gateway")
    port = free_port()
    deployments = [
        {
            "name": server.model_name,
            "model": str(server.config.model),
            "url": server.url,
            "served_model_name": server.model_name,
            "engine_args": engine_args(family),
        }
        for server, family in ((qwen3_server, Family.QWEN3), (mistral_server, Family.MISTRAL))
    ]
    fleet = {"state_dir": str(folder / "state"), "deployments": deployments, "gateway": {"listen": f"127.0.0.1:{port}"}}
    fleet_file = folder / "fleet.yaml"
    fleet_file.write_text(yaml.safe_dump(fleet))
    key = KeyStore(folder / "state" / "gateway.sqlite3").create("validate")[0]
    gateway = RunningGateway(fleet_file, port)
    gateway.start()
    try:
        yield fleet_file, key
    finally:
        gateway.stop()


def test_library_passes_on_tiny_qwen3_and_mistral_probed_directly(
    qwen3_server: VllmServer, mistral_server: VllmServer
) -> None:
    """Bare URLs, nothing known about the engine args: everything that can be probed passes."""
    report = validate(
        [
            Target(name="qwen3", base_url=qwen3_server.url, model=qwen3_server.model_name, family="qwen3"),
            Target(name="mistral", base_url=mistral_server.url, model=mistral_server.model_name, family="mistral"),
        ]
    )
    assert report.ok, not_passed(report)
    qwen3, mistral = statuses(report.targets[0]), statuses(report.targets[1])
    assert set(qwen3.values()) == {Status.PASS}, not_passed(report)
    assert {"reasoning.on", "reasoning.off", *TOOL_CHECKS, "prefix_cache.hit", "limits.context"} <= set(qwen3)
    assert {check for check, status in mistral.items() if status is Status.SKIP} == {"reasoning.on", "mistral.repairs"}
    prefix = next(r for r in report.targets[0].results if r.check == "prefix_cache.hit")
    assert prefix.evidence["evidence"] == "engine /metrics vllm:prefix_cache_hits_total"
    assert prefix.evidence["hit_tokens"] * 2 >= prefix.evidence["prompt_tokens"] > 1000
    assert all(ms is not None for ms in prefix.evidence["time_to_first_token_ms"])


def test_cli_through_the_gateway_passes_both_with_json_and_junit(
    gateway_fleet: tuple[Path, str], tmp_path: Path
) -> None:
    fleet_file, key = gateway_fleet
    junit = tmp_path / "validate.xml"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokengate",
            "validate",
            "--fleet",
            str(fleet_file),
            "--gateway",
            "--json",
            "--junit",
            str(junit),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "TOKENGATE_API_KEY": key},
        timeout=600,
    )
    document = json.loads(completed.stdout)
    problems = [(t["target"]["name"], r) for t in document["targets"] for r in t["results"] if r["status"] == "fail"]
    assert completed.returncode == 0, (problems, completed.stderr[-2000:])
    assert document["ok"] is True
    by_target = {t["target"]["name"]: {r["check"]: r for r in t["results"]} for t in document["targets"]}
    assert set(by_target) == {"tiny-qwen3", "tiny-mistral"}
    mistral = by_target["tiny-mistral"]
    assert {name for name in mistral if name.startswith("mistral.")} == MISTRAL_CASES
    assert all(mistral[name]["status"] == "pass" for name in MISTRAL_CASES)
    assert mistral["reasoning.on"]["reason"] == "no --reasoning-parser in the engine args"
    qwen3 = by_target["tiny-qwen3"]
    assert all(result["status"] == "pass" for result in qwen3.values()), qwen3
    # Through the gateway the engine's own counters are still the evidence: its URL is in the fleet file.
    assert qwen3["prefix_cache.hit"]["evidence"]["evidence"] == "engine /metrics vllm:prefix_cache_hits_total"

    suites = {suite.name: suite for suite in JUnitXml.fromfile(str(junit))}
    assert set(suites) == {"tiny-qwen3", "tiny-mistral"}
    assert sum(suite.failures for suite in suites.values()) == 0
    assert {case.name for case in suites["tiny-mistral"]} >= MISTRAL_CASES
    assert suites["tiny-qwen3"].tests == len(qwen3)


def test_library_through_the_gateway_with_engine_args(
    gateway_fleet: tuple[Path, str], qwen3_server: VllmServer, mistral_server: VllmServer
) -> None:
    """The same deployments as typed targets, judged against their engine args."""
    fleet_file, key = gateway_fleet
    gateway_url = "http://" + yaml.safe_load(fleet_file.read_text())["gateway"]["listen"]
    facts = {
        "qwen3": EngineFacts(reasoning_parser="qwen3", tool_call_parser="hermes", auto_tool_choice=True),
        "mistral": EngineFacts(tool_call_parser="mistral", auto_tool_choice=True),
    }
    report = validate(
        [
            Target(
                name=family,
                base_url=gateway_url,
                model=server.model_name,
                api_key=key,
                family=family,
                via_gateway=True,
                engine_url=server.url,
                engine=facts[family],
            )
            for family, server in (("qwen3", qwen3_server), ("mistral", mistral_server))
        ]
    )
    assert report.ok, not_passed(report)
    assert set(statuses(report.targets[1])) >= MISTRAL_CASES


def test_plain_qwen3_fails_naming_auto_tool_choice_and_prefix_caching(qwen3_plain_server: VllmServer) -> None:
    target = Target(
        name="plain",
        base_url=qwen3_plain_server.url,
        model=qwen3_plain_server.model_name,
        family="qwen3",
        deployment="plain",
        engine=EngineFacts(reasoning_parser="qwen3", tool_call_parser="hermes", prefix_caching=False),
    )
    report = validate([target])
    failed = {r.check: r for r in report.results if r.status is Status.FAIL}
    assert set(failed) == {*TOOL_CHECKS, "prefix_cache.hit"}, not_passed(report)
    assert "--enable-auto-tool-choice" in failed["tools.auto"].reason  # the engine's own message
    assert failed["tools.auto"].fix.startswith("start vLLM with --enable-auto-tool-choice --tool-call-parser hermes")
    assert "enable-auto-tool-choice: true" in failed["tools.auto"].fix  # the fleet file's spelling
    assert "--enable-prefix-caching" in failed["prefix_cache.hit"].fix
    assert "enable_prefix_caching=False" in failed["prefix_cache.hit"].reason
    assert failed["prefix_cache.hit"].evidence["hit_tokens"] == 0
    assert statuses(report)["reasoning.on"] is Status.PASS


def test_cli_on_the_plain_url_exits_1_with_the_failures_in_junit(
    qwen3_plain_server: VllmServer, tmp_path: Path
) -> None:
    junit = tmp_path / "plain.xml"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "tokengate",
            "validate",
            qwen3_plain_server.url,
            "--family",
            "qwen3",
            "--junit",
            str(junit),
        ],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert "--enable-auto-tool-choice" in completed.stdout
    assert "--enable-prefix-caching" in completed.stdout
    (suite,) = list(JUnitXml.fromfile(str(junit)))
    failures = {case.name: case.result[0] for case in suite if case.result and isinstance(case.result[0], Failure)}
    assert set(failures) == {*TOOL_CHECKS, "prefix_cache.hit"}
    assert "--enable-auto-tool-choice" in (failures["tools.auto"].text or "")
