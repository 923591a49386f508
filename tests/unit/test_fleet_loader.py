from __future__ import annotations

from pathlib import Path

import pytest

from tokengate.errors import InvalidInputError
from tokengate.fleet.loader import load_fleet, resolve_secret, state_dir

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_example_fleet_has_the_seeds_services() -> None:
    fleet = load_fleet(EXAMPLES / "fleet.yaml", environ={})
    ports = {d.name: d.port for d in fleet.deployments}
    assert ports == {"micro": 5000, "mini": 5001, "medium": 5002, "devstral": 8000, "devstral-spark": None}
    assert fleet.deployment("medium").gpus == [0, 1]
    assert fleet.deployment("micro").gpus == fleet.deployment("mini").gpus == [2]
    assert fleet.deployment("devstral-spark").external
    assert fleet.deployment("micro").api_key == "${VLLM_API_KEY_MICRO}"  # kept as a reference
    assert fleet.deployment("medium").engine_args.passthrough == {"distributed_executor_backend": "mp"}


def test_demo_fleet_resolves_model_paths_next_to_the_file() -> None:
    fleet = load_fleet(EXAMPLES / "demo.yaml", environ={})
    model = Path(fleet.deployment("tiny-qwen3").model)
    assert model.is_absolute()
    assert model == (EXAMPLES / ".." / ".tokengate" / "demo" / "tiny-qwen3").resolve()
    assert fleet.deployment("tiny-qwen3").engine_args.passthrough["structured_outputs_config"].startswith('{"backend"')


def test_variables_expand_as_compose_does(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "deployments:\n"
        "  - name: a\n"
        "    model: ${MODEL}\n"
        "    port: ${PORT:-9000}\n"
        "    env: {PRICE: $$5, EMPTY: '${UNSET-fallback}'}\n",
    )
    fleet = load_fleet(path, environ={"MODEL": "Qwen/Qwen3-8B"})
    deployment = fleet.deployment("a")
    assert (deployment.model, deployment.port) == ("Qwen/Qwen3-8B", 9000)
    assert deployment.env == {"PRICE": "$5", "EMPTY": "fallback"}


def test_missing_variable_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "deployments:\n  - name: a\n    model: ${NOPE}\n    port: 1\n")
    with pytest.raises(InvalidInputError, match=r"fleet.yaml:3: \$\{NOPE\} is not set"):
        load_fleet(path, environ={})


def test_typos_and_bad_values_name_file_line_and_field(tmp_path: Path) -> None:
    path = write(tmp_path, "deployments:\n  - name: a\n    model: m\n    port: 1\n    gpu_kind: h100\n")
    with pytest.raises(InvalidInputError, match=r"fleet.yaml:5: deployments.0.gpu_kind: Extra inputs"):
        load_fleet(path, environ={})
    path = write(tmp_path, "deployments:\n  - name: a\n    model: m\n    port: 99999\n")
    with pytest.raises(InvalidInputError, match=r"fleet.yaml:4: deployments.0.port"):
        load_fleet(path, environ={})


def test_inline_secrets_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "deployments:\n  - name: a\n    model: m\n    port: 1\n    api_key: sk-live-123\n")
    with pytest.raises(InvalidInputError, match="never inline"):
        load_fleet(path, environ={})


def test_duplicate_names_and_ports(tmp_path: Path) -> None:
    two = "deployments:\n  - {name: a, model: m, port: 1}\n  - {name: a, model: m, port: 2}\n"
    with pytest.raises(InvalidInputError, match="unique"):
        load_fleet(write(tmp_path, two), environ={})
    same_port = "deployments:\n  - {name: a, model: m, port: 1}\n  - {name: b, model: m, port: 1}\n"
    with pytest.raises(InvalidInputError, match="port 1"):
        load_fleet(write(tmp_path, same_port), environ={})


def test_not_yaml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not valid YAML"):
        load_fleet(write(tmp_path, "deployments: [\n"), environ={})
    with pytest.raises(InvalidInputError, match="cannot read fleet file"):
        load_fleet(tmp_path / "absent.yaml")


def test_state_dir_is_relative_to_the_fleet_file(tmp_path: Path) -> None:
    path = write(tmp_path, "state_dir: run\ndeployments:\n  - {name: a, model: m, port: 1}\n")
    assert state_dir(load_fleet(path, environ={}), path) == tmp_path / "run"


def test_secrets_resolve_only_when_needed() -> None:
    assert resolve_secret("${KEY}", {"KEY": "s3cret"}) == "s3cret"
    with pytest.raises(InvalidInputError, match="export KEY"):
        resolve_secret("${KEY}", {})
