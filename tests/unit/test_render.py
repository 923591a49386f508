from __future__ import annotations

import json
import re
import shlex
import subprocess
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import typer
import yaml
from typer.testing import CliRunner

from tokengate.cli.render import render
from tokengate.fleet.loader import load_fleet
from tokengate.fleet.schema import Deployment, Fleet
from tokengate.plan.render import (
    STARTUP_MAX_SECONDS,
    STARTUP_UNKNOWN_SECONDS,
    k8s_name,
    render_compose,
    render_kubernetes,
    render_vllm,
    secret_name,
    startup_seconds,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FLEET = EXAMPLES / "fleet.yaml"
DEMO = EXAMPLES / "demo.yaml"
KUBERNETES_VERSION = "1.31"
# The seeds' services: port, GPU ids, flags their command must carry.
SEEDS = {
    "micro": (5000, ["2"], ["--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]),
    "mini": (5001, ["2"], ["--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]),
    "medium": (5002, ["0", "1"], ["--tool-call-parser", "hermes", "--reasoning-parser", "qwen3"]),
    "devstral": (8000, ["3", "4"], ["--tool-call-parser", "mistral"]),
}
SECRET_VALUES = {
    "VLLM_API_KEY_MICRO": "sk-micro-value",
    "VLLM_API_KEY_MINI": "sk-mini-value",
    "VLLM_API_KEY_MEDIUM": "sk-medium-value",
    "TOKENGATE_KEY_AGENTS": "tg-agents-value",
}
runner = CliRunner()


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("TOKENGATE_VLLM_PYTHON", raising=False)


@pytest.fixture
def fleet() -> Fleet:
    # The secrets are set, as they would be when rendering on a real host: none of them may be written out.
    return load_fleet(FLEET, environ=SECRET_VALUES)


@pytest.fixture
def demo(tmp_path: Path) -> Fleet:
    # Models in an empty folder: whether `make demo` created the real ones must not change the render.
    return load_fleet(DEMO, environ={"TOKENGATE_DEMO_MODELS": str(tmp_path / "models")})


def _compose(fleet: Fleet) -> dict[str, Any]:
    return yaml.safe_load(render_compose(fleet).files["docker-compose.yml"])


def _kubernetes(fleet: Fleet) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(render_kubernetes(fleet).files["kubernetes.yaml"]))


def _compose_schema() -> dict[str, Any]:
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(vendored.read_text())


def _every_file(fleet: Fleet) -> dict[str, str]:
    return {
        **render_compose(fleet).files,
        **render_kubernetes(fleet).files,
        **render_vllm(fleet).files,
    }


@pytest.mark.parametrize("path", [FLEET, DEMO])
def test_compose_validates_against_the_compose_spec(path: Path) -> None:
    document = _compose(load_fleet(path, environ={}))
    jsonschema.Draft202012Validator(_compose_schema()).validate(document)


@pytest.mark.parametrize("path", [FLEET, DEMO])
def test_kubernetes_validates_against_the_kubernetes_schemas(path: Path) -> None:
    documents = _kubernetes(load_fleet(path, environ={}))
    assert documents
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", list(SEEDS))
def test_compose_seed_services_have_their_port_gpus_and_parsers(fleet: Fleet, name: str) -> None:
    port, gpu_ids, flags = SEEDS[name]
    service = _compose(fleet)["services"][name]
    assert service["image"] == "vllm/vllm-openai:latest"
    assert "entrypoint" not in service  # the image's entrypoint is `vllm serve`
    command = service["command"]
    assert command[0] == fleet.deployment(name).model
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert command[command.index("--port") + 1] == str(port)
    assert " ".join(flags) in " ".join(command)
    assert service["ports"] == [f"127.0.0.1:{port}:{port}"]  # published where the fleet listens: the loopback
    assert service["ipc"] == "host"
    assert service["shm_size"] == "16gb"
    assert "${HF_CACHE:-~/.cache/huggingface}:/root/.cache/huggingface" in service["volumes"]
    (device,) = service["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "device_ids": gpu_ids, "capabilities": ["gpu"]}
    assert service["healthcheck"]["test"] == ["CMD", "curl", "-f", f"http://localhost:{port}/health"]


def test_compose_publishes_every_interface_when_the_deployment_listens_on_it(fleet: Fleet) -> None:
    open_fleet = fleet.model_copy(
        update={"deployments": [d.model_copy(update={"host": "0.0.0.0"}) for d in fleet.deployments]}
    )
    assert _compose(open_fleet)["services"]["micro"]["ports"] == ["5000:5000"]


def test_the_external_deployment_is_not_rendered(fleet: Fleet) -> None:
    assert set(_compose(fleet)["services"]) == {*SEEDS, "tokengate-gateway"}
    names = {doc["metadata"]["name"] for doc in _kubernetes(fleet) if doc["kind"] in {"Deployment", "Service"}}
    assert names == {*SEEDS, "tokengate-gateway"}
    assert "devstral-spark" not in render_vllm(fleet).files["launch.sh"]


def test_secrets_appear_only_as_references(fleet: Fleet) -> None:
    files = _every_file(fleet)
    for name, text in files.items():
        for value in SECRET_VALUES.values():
            assert value not in text, name
    services = _compose(fleet)["services"]
    assert services["micro"]["environment"]["VLLM_API_KEY"] == "${VLLM_API_KEY_MICRO}"
    assert "environment" not in services["devstral"] or "VLLM_API_KEY" not in services["devstral"]["environment"]
    assert 'VLLM_API_KEY="${VLLM_API_KEY_MICRO}"' in files["launch.sh"]
    assert "kind: Secret\n" not in files["kubernetes.yaml"]


def test_env_example_lists_every_variable_the_compose_file_references(fleet: Fleet) -> None:
    files = render_compose(fleet).files
    body = "\n".join(line for line in files["docker-compose.yml"].splitlines() if not line.startswith("#"))
    referenced = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", body))
    assert referenced == {"HF_CACHE", *SECRET_VALUES}
    defined = {line.split("=", 1)[0] for line in files[".env.example"].splitlines() if "=" in line and line[0] != "#"}
    assert defined == referenced


def test_compose_gateway_waits_for_healthy_engines_and_gets_its_keys(fleet: Fleet, tmp_path: Path) -> None:
    files = render_compose(fleet).files
    gateway = yaml.safe_load(files["docker-compose.yml"])["services"]["tokengate-gateway"]
    assert gateway["image"] == "tokengate:latest"
    assert gateway["command"] == ["tokengate", "gateway", "/fleet/fleet.yaml"]
    assert gateway["ports"] == ["8080:8080"]
    assert gateway["volumes"] == ["./gateway-fleet.yaml:/fleet/fleet.yaml:ro"]
    assert gateway["depends_on"] == {name: {"condition": "service_healthy"} for name in SEEDS}
    assert gateway["environment"]["TOKENGATE_KEY_AGENTS"] == "${TOKENGATE_KEY_AGENTS}"
    assert gateway["environment"]["VLLM_API_KEY_MINI"] == "${VLLM_API_KEY_MINI}"
    # The gateway's own fleet file loads, reaches each engine at its service name, and keeps secrets as references.
    (tmp_path / "gateway-fleet.yaml").write_text(files["gateway-fleet.yaml"])
    seen = load_fleet(tmp_path / "gateway-fleet.yaml", environ={})
    assert all(d.external for d in seen.deployments)
    assert seen.deployment("mini").base_url == "http://mini:5001"
    assert seen.deployment("devstral-spark").base_url == "http://gb10.local:8000"
    assert seen.deployment("micro").api_key == "${VLLM_API_KEY_MICRO}"
    assert seen.gateway is not None
    assert seen.gateway.listen == "0.0.0.0:8080"
    assert seen.gateway.keys[0].key == "${TOKENGATE_KEY_AGENTS}"


def test_healthcheck_start_period_grows_with_the_weights_per_gpu(fleet: Fleet) -> None:
    services = _compose(fleet)["services"]
    periods = {name: int(services[name]["healthcheck"]["start_period"].removesuffix("s")) for name in SEEDS}
    assert 60 < periods["micro"] < periods["mini"] < periods["medium"] <= STARTUP_MAX_SECONDS


def test_startup_seconds_is_capped_and_falls_back_for_unknown_models() -> None:
    huge = Deployment(name="big", model="deepseek-ai/DeepSeek-V3", port=1)
    assert startup_seconds(huge) == STARTUP_MAX_SECONDS
    missing = Deployment(name="gone", model="/nowhere/model", port=1)
    assert startup_seconds(missing) == STARTUP_UNKNOWN_SECONDS
    unknown = Deployment(name="hub", model="someone/not-in-the-catalog", port=1)
    assert startup_seconds(unknown) == STARTUP_UNKNOWN_SECONDS
    one = Deployment(name="one", model="Qwen/Qwen3-32B-AWQ", port=1)
    two = Deployment(name="two", model="Qwen/Qwen3-32B-AWQ", port=1, engine_args={"tensor-parallel-size": 2})
    assert startup_seconds(two) < startup_seconds(one)


def test_cpu_form_runs_the_api_server_module(demo: Fleet) -> None:
    services = _compose(demo)["services"]
    service = services["tiny-qwen3"]
    assert service["entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert service["command"][:2] == ["--model", demo.deployment("tiny-qwen3").model]
    assert "deploy" not in service
    assert service["healthcheck"]["start_period"] == f"{STARTUP_UNKNOWN_SECONDS}s"  # the tiny model is not made yet
    model_dir = demo.deployment("tiny-qwen3").model
    assert f"{model_dir}:{model_dir}:ro" in service["volumes"]
    assert services["tokengate-gateway"]["ports"] == ["127.0.0.1:8100:8100"]


def test_cpu_form_uses_the_image_python_not_the_hosts(tmp_path: Path) -> None:
    demo = load_fleet(DEMO, environ={"TOKENGATE_VLLM_PYTHON": "/opt/venv/bin/python"})
    service = _compose(demo)["services"]["tiny-mistral"]
    assert service["entrypoint"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert "/opt/venv/bin/python" not in render_compose(demo).files["docker-compose.yml"]
    assert "/opt/venv/bin/python -m vllm.entrypoints" in render_vllm(demo).files["launch.sh"]


def test_compose_escapes_literal_dollars(fleet: Fleet) -> None:
    micro = fleet.deployment("micro").model_copy(update={"env": {"PROMPT_PREFIX": "cost: $5"}})
    one = fleet.model_copy(update={"deployments": [micro], "gateway": None})
    assert _compose(one)["services"]["micro"]["environment"]["PROMPT_PREFIX"] == "cost: $$5"


def test_no_file_uses_yaml_aliases(fleet: Fleet, demo: Fleet) -> None:
    for rendered in (_every_file(fleet), _every_file(demo)):
        for name, text in rendered.items():
            assert "&id0" not in text and "*id0" not in text, name


def test_kubernetes_engines(fleet: Fleet) -> None:
    documents = _kubernetes(fleet)
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Service"}
    claims = [d for d in documents if d["kind"] == "PersistentVolumeClaim"]
    assert len(claims) == 1
    for name, (port, gpu_ids, flags) in SEEDS.items():
        pod = deployments[name]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][0] == fleet.deployment(name).model
        assert " ".join(flags) in " ".join(container["args"])
        assert "command" not in container
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert container["resources"]["limits"]["nvidia.com/gpu"] == len(gpu_ids)
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == "/health"
        assert container["readinessProbe"]["initialDelaySeconds"] > 60
        assert container["livenessProbe"]["failureThreshold"] >= 5
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
        assert volumes["hf-cache"]["persistentVolumeClaim"]["claimName"] == claims[0]["metadata"]["name"]
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert {"/dev/shm", "/root/.cache/huggingface"} <= mounts
        assert services[name]["spec"]["ports"][0]["port"] == port
        assert deployments[name]["spec"]["strategy"]["type"] == "Recreate"
    (api_key,) = [e for e in deployments["micro"]["spec"]["template"]["spec"]["containers"][0]["env"]]
    assert api_key == {
        "name": "VLLM_API_KEY",
        "valueFrom": {"secretKeyRef": {"name": "vllm-api-key-micro", "key": "value"}},
    }


def test_kubernetes_gateway(fleet: Fleet) -> None:
    documents = _kubernetes(fleet)
    gateway = next(d for d in documents if d["kind"] == "Deployment" and d["metadata"]["name"] == "tokengate-gateway")
    (container,) = gateway["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["tokengate", "gateway", "/fleet/fleet.yaml"]
    assert container["ports"] == [{"name": "http", "containerPort": 8080}]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"]["name"] for e in container["env"]}
    assert secrets["TOKENGATE_KEY_AGENTS"] == "tokengate-key-agents"
    config = next(d for d in documents if d["kind"] == "ConfigMap")
    seen = yaml.safe_load(config["data"]["fleet.yaml"])
    urls = {d["name"]: d["url"] for d in seen["deployments"]}
    assert urls["medium"] == "http://medium:5002"


def test_kubernetes_cpu_form(demo: Fleet) -> None:
    documents = _kubernetes(demo)
    engine = next(d for d in documents if d["metadata"]["name"] == "tiny-qwen3" and d["kind"] == "Deployment")
    (container,) = engine["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    assert container["args"][0] == "--model"
    assert "resources" not in container


@pytest.mark.parametrize(
    ("name", "label"),
    [("micro", "micro"), ("Qwen3_Big", "qwen3-big"), ("7b", "tg-7b"), ("a" * 80, "a" * 63), ("x-", "x")],
)
def test_k8s_names_are_dns_labels(name: str, label: str) -> None:
    assert k8s_name(name) == label


def test_secret_names_come_from_the_variable() -> None:
    assert secret_name("${VLLM_API_KEY_MICRO}") == "vllm-api-key-micro"


def test_launch_script_lines_parse_back(fleet: Fleet) -> None:
    script = render_vllm(fleet).files["launch.sh"]
    lines = [line for line in script.splitlines() if line.endswith(" &")]
    assert len(lines) == len(SEEDS)
    for line, name in zip(lines, SEEDS, strict=True):
        deployment = fleet.deployment(name)
        words = shlex.split(line)
        serve = words.index("vllm")
        assert words[serve : serve + 3] == ["vllm", "serve", deployment.model]
        assert f"CUDA_VISIBLE_DEVICES={','.join(SEEDS[name][1])}" in words[:serve]
        assert words[-1] == "&"
    assert 'VLLM_API_KEY="${VLLM_API_KEY_MEDIUM}" vllm serve Qwen/Qwen3-32B-AWQ' in script
    assert "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True vllm serve mistralai/" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)


def test_launch_script_quotes_json_flags(demo: Fleet) -> None:
    script = render_vllm(demo).files["launch.sh"]
    line = next(line for line in script.splitlines() if "tiny-mistral --host" in line)
    words = shlex.split(line)
    config = words[words.index("--structured-outputs-config") + 1]
    assert json.loads(config) == {"backend": "xgrammar", "disable_any_whitespace": True}


def _cli() -> typer.Typer:
    app = typer.Typer()
    app.command()(render)
    return app


def test_cli_writes_files_with_out(tmp_path: Path) -> None:
    out = tmp_path / "deploy"
    result = runner.invoke(_cli(), [str(FLEET), "--to", "compose", "--out", str(out)])
    assert result.exit_code == 0, result.output
    names = {"docker-compose.yml", ".env.example", "gateway-fleet.yaml"}
    assert {path.name for path in out.iterdir()} == names
    assert sorted(result.output.splitlines()) == sorted(f"wrote {out / name}" for name in names)
    result = runner.invoke(_cli(), [str(FLEET), "--to", "vllm", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / "launch.sh").stat().st_mode & 0o111


def test_cli_prints_json(tmp_path: Path) -> None:
    result = runner.invoke(_cli(), [str(FLEET), "--to", "k8s", "--json"])
    assert result.exit_code == 0, result.output
    files = json.loads(result.stdout)["files"]
    assert list(files) == ["kubernetes.yaml"]
    assert "kind: Deployment" in files["kubernetes.yaml"]


def test_cli_prints_several_files_with_separators() -> None:
    result = runner.invoke(_cli(), [str(FLEET), "--to", "compose"])
    assert result.exit_code == 0, result.output
    assert "# --- docker-compose.yml ---\n" in result.stdout
    assert "# --- .env.example ---\n" in result.stdout
    single = runner.invoke(_cli(), [str(FLEET), "--to", "vllm"])
    assert single.stdout.startswith("#!/usr/bin/env bash")


def test_cli_rejects_an_unknown_target() -> None:
    result = runner.invoke(_cli(), [str(FLEET), "--to", "nomad"])
    assert result.exit_code == 2
    assert "nomad" in result.output
