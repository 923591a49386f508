"""What every rendering of a fleet shares: the engines it starts, their container command, startup allowance and
secrets, and the fleet as a containerised gateway sees it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tokengate.errors import TokengateError
from tokengate.fleet.loader import SECRET_FIELDS
from tokengate.fleet.schema import CPU_API_SERVER, VLLM_SERVE, Deployment, Fleet
from tokengate.models.source import load_model_spec
from tokengate.models.weights import weight_bytes
from tokengate.plan.argv import vllm_argv

GIB = 1024**3
HF_CACHE_MOUNT = "/root/.cache/huggingface"
GATEWAY_NAME = "tokengate-gateway"
GATEWAY_IMAGE = "tokengate:latest"
GATEWAY_FLEET_FILE = "gateway-fleet.yaml"
GATEWAY_FLEET_MOUNT = "/fleet/fleet.yaml"
GATEWAY_COMMAND = ["tokengate", "gateway", GATEWAY_FLEET_MOUNT]
# The gateway only reads its fleet file; whatever it writes goes to a writable place in the container.
GATEWAY_STATE_DIR = "/tmp/tokengate"

# Loading time allowed before health checks count: a fixed start plus a rate per GiB of weights each GPU reads.
STARTUP_BASE_SECONDS = 60
STARTUP_SECONDS_PER_GIB = 20
STARTUP_MAX_SECONDS = 30 * 60
STARTUP_UNKNOWN_SECONDS = 600

_API_SERVER_MODULE = tuple(CPU_API_SERVER[-2:])
YAML_WIDTH = 10_000  # one line per value, however long the argv


class RenderedFiles(BaseModel):
    """File name → text, in the order they are best read."""

    files: dict[str, str]


def engine_deployments(fleet: Fleet) -> list[Deployment]:
    """The deployments a render starts: every one but the external engines reached by URL."""
    return [deployment for deployment in fleet.deployments if not deployment.external]


def container_args(deployment: Deployment) -> list[str]:
    """The vLLM argv after the command words, listening on every interface of the container."""
    return vllm_argv(deployment, host="0.0.0.0")[len(deployment.command) :]


def container_entrypoint(deployment: Deployment) -> list[str] | None:
    """None when the image's own entrypoint (`vllm serve`) fits; the CPU form runs the API server module."""
    command = tuple(deployment.command)
    if command == VLLM_SERVE:
        return None
    if command[-2:] == _API_SERVER_MODULE:
        # The fleet's interpreter path (TOKENGATE_VLLM_PYTHON) is the host's; the image has python3.
        return list(CPU_API_SERVER)
    return list(command)


def model_weight_bytes(model: str) -> int | None:
    """Weight bytes of a model as `load_model_spec` resolves it, or None when it cannot be resolved.

    A missing local path is not looked up on the hub; ids outside the bundled catalog are, unless HF_HUB_OFFLINE=1.
    """
    if model.startswith(("/", ".", "~")) and not Path(model).expanduser().exists():
        return None
    try:
        return weight_bytes(load_model_spec(model))
    except (TokengateError, ValueError):
        return None


def startup_seconds(deployment: Deployment) -> int:
    """Seconds to allow for loading before health checks count, from the weight bytes each GPU reads."""
    total = model_weight_bytes(deployment.model)
    if total is None:
        return STARTUP_UNKNOWN_SECONDS
    args = deployment.engine_args
    per_gpu = total / max(1, args.tensor_parallel_size * args.pipeline_parallel_size)
    return min(STARTUP_MAX_SECONDS, STARTUP_BASE_SECONDS + math.ceil(STARTUP_SECONDS_PER_GIB * per_gpu / GIB))


def local_model_dir(deployment: Deployment) -> str | None:
    """The model's host path when it is one (the loader makes them absolute), to mount at the same path."""
    return deployment.model if Path(deployment.model).is_absolute() else None


def secret_variables(fleet: Fleet) -> dict[str, list[str]]:
    """Each `${VAR}` secret the fleet references → what uses it, in fleet order."""
    users: dict[str, list[str]] = {}
    for deployment in fleet.deployments:
        if deployment.api_key:
            users.setdefault(variable_name(deployment.api_key), []).append(f"API key of deployment {deployment.name}")
    for key in fleet.gateway.keys if fleet.gateway else []:
        users.setdefault(variable_name(key.key), []).append(f"key {key.name} of the gateway")
    return users


def gateway_fleet_text(fleet: Fleet, engine_host: dict[str, str]) -> str:
    """The fleet as the gateway sees it from inside the cluster: every engine external, at its service name.

    The fleet's own addresses are the host's (127.0.0.1), which a gateway container cannot reach.
    """
    deployments = [
        d if d.external else d.model_copy(update={"url": f"http://{engine_host[d.name]}:{d.port}"})
        for d in fleet.deployments
    ]
    gateway = fleet.gateway.model_copy(update={"listen": f"0.0.0.0:{fleet.gateway.port}"}) if fleet.gateway else None
    view = fleet.model_copy(update={"deployments": deployments, "gateway": gateway, "state_dir": GATEWAY_STATE_DIR})
    raw = _escape_dollars(view.model_dump(mode="json", exclude_defaults=True))
    header = "# The fleet as the Tokengate gateway sees it inside the cluster (generated by `tokengate render`).\n"
    return header + dump_yaml(raw)


def variable_name(reference: str) -> str:
    return reference[2:-1]


def _escape_dollars(value: Any, key: str | None = None) -> Any:
    """`$` → `$$` so a literal dollar survives the loader's expansion; secret references stay references."""
    if isinstance(value, dict):
        return {k: _escape_dollars(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_escape_dollars(item) for item in value]
    if isinstance(value, str) and key not in SECRET_FIELDS:
        return value.replace("$", "$$")
    return value


def dump_yaml(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=YAML_WIDTH)


def engine_port(deployment: Deployment) -> int:
    assert deployment.port is not None  # the schema requires a port on every deployment without a url
    return deployment.port
