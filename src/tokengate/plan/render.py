"""A fleet as files that start it elsewhere: a compose project, Kubernetes manifests, or a script of `vllm serve`.

Secrets never get a value here: compose and the script keep the fleet's `${VAR}` references, Kubernetes reads
them from Secrets named after the variable. External deployments (`url:`) run somewhere else and are not rendered.
"""

from __future__ import annotations

import math
import re
import shlex
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from tokengate.errors import TokengateError
from tokengate.fleet.loader import SECRET_FIELDS
from tokengate.fleet.schema import CPU_API_SERVER, VLLM_SERVE, Deployment, Fleet, Gateway
from tokengate.models.source import load_model_spec
from tokengate.models.weights import weight_bytes
from tokengate.plan.argv import vllm_argv

GIB = 1024**3
HF_CACHE_MOUNT = "/root/.cache/huggingface"
HF_CACHE_HOST = "${HF_CACHE:-~/.cache/huggingface}"
GATEWAY_NAME = "tokengate-gateway"
GATEWAY_IMAGE = "tokengate:latest"
GATEWAY_FLEET_FILE = "gateway-fleet.yaml"
GATEWAY_FLEET_MOUNT = "/fleet/fleet.yaml"
GATEWAY_COMMAND = ["tokengate", "gateway", GATEWAY_FLEET_MOUNT]
# The gateway only reads its fleet file; whatever it writes goes to a writable place in the container.
GATEWAY_STATE_DIR = "/tmp/tokengate"
HF_CACHE_CLAIM = "tokengate-hf-cache"
SECRET_KEY = "value"
KUBERNETES_PART_OF = "tokengate"

# Loading time allowed before health checks count: a fixed start plus a rate per GiB of weights each GPU reads.
STARTUP_BASE_SECONDS = 60
STARTUP_SECONDS_PER_GIB = 20
STARTUP_MAX_SECONDS = 30 * 60
STARTUP_UNKNOWN_SECONDS = 600

_API_SERVER_MODULE = tuple(CPU_API_SERVER[-2:])
_YAML_WIDTH = 10_000  # one line per value, however long the argv


class RenderedFiles(BaseModel):
    """File name → text, in the order they are best read."""

    files: dict[str, str]


# --- shared pieces -------------------------------------------------------------------------------------------------


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
            users.setdefault(_variable(deployment.api_key), []).append(f"API key of deployment {deployment.name}")
    for key in fleet.gateway.keys if fleet.gateway else []:
        users.setdefault(_variable(key.key), []).append(f"key {key.name} of the gateway")
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
    return header + _dump(raw)


def _variable(reference: str) -> str:
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


def _dump(data: Any) -> str:
    return yaml.safe_dump(data, sort_keys=False, width=_YAML_WIDTH)


def _published(host: str, port: int) -> str:
    """A port published as the fleet says it listens: on every interface, or only on the given address."""
    return f"{port}:{port}" if host in {"0.0.0.0", "::", ""} else f"{host}:{port}:{port}"


# --- docker compose ------------------------------------------------------------------------------------------------


def render_compose(fleet: Fleet) -> RenderedFiles:
    engines = engine_deployments(fleet)
    services: dict[str, Any] = {d.name: _compose_engine(d) for d in engines}
    files: dict[str, str] = {}
    if fleet.gateway:
        services[GATEWAY_NAME] = _compose_gateway(fleet, fleet.gateway, engines)
    files["docker-compose.yml"] = _compose_header(fleet) + _dump({"services": services})
    if fleet.gateway:
        files[GATEWAY_FLEET_FILE] = gateway_fleet_text(fleet, {d.name: d.name for d in engines})
    files[".env.example"] = _env_example(fleet)
    return RenderedFiles(files=files)


def _literal(text: str) -> str:
    """Compose interpolates `$`; a literal one is written `$$`."""
    return text.replace("$", "$$")


def _compose_engine(deployment: Deployment) -> dict[str, Any]:
    service: dict[str, Any] = {"image": _literal(deployment.image)}
    entrypoint = container_entrypoint(deployment)
    if entrypoint:
        service["entrypoint"] = [_literal(word) for word in entrypoint]
    service["command"] = [_literal(arg) for arg in container_args(deployment)]
    service["ports"] = [_published(deployment.host, _port(deployment))]
    service["ipc"] = "host"
    service["shm_size"] = "16gb"
    volumes = [f"{HF_CACHE_HOST}:{HF_CACHE_MOUNT}"]
    model_dir = local_model_dir(deployment)
    if model_dir:
        volumes.append(f"{_literal(model_dir)}:{_literal(model_dir)}:ro")
    service["volumes"] = volumes
    environment = {name: _literal(value) for name, value in deployment.env.items()}
    if deployment.api_key:
        environment["VLLM_API_KEY"] = deployment.api_key
    if environment:
        service["environment"] = environment
    if deployment.gpus:
        devices = [{"driver": "nvidia", "device_ids": [str(gpu) for gpu in deployment.gpus], "capabilities": ["gpu"]}]
        service["deploy"] = {"resources": {"reservations": {"devices": devices}}}
    service["healthcheck"] = {
        "test": ["CMD", "curl", "-f", f"http://localhost:{deployment.port}/health"],
        "interval": "30s",
        "timeout": "10s",
        "retries": 5,
        "start_period": f"{startup_seconds(deployment)}s",
    }
    return service


def _compose_gateway(fleet: Fleet, gateway: Gateway, engines: list[Deployment]) -> dict[str, Any]:
    service: dict[str, Any] = {
        "image": GATEWAY_IMAGE,
        "command": list(GATEWAY_COMMAND),
        "ports": [_published(gateway.host, gateway.port)],
        "volumes": [f"./{GATEWAY_FLEET_FILE}:{GATEWAY_FLEET_MOUNT}:ro"],
    }
    variables = secret_variables(fleet)
    if variables:
        service["environment"] = {name: f"${{{name}}}" for name in variables}
    if engines:
        service["depends_on"] = {d.name: {"condition": "service_healthy"} for d in engines}
    return service


def _compose_header(fleet: Fleet) -> str:
    lines = [
        "# Generated by `tokengate render --to compose`. Start with: docker compose up -d",
        "# Secrets are ${VAR} references: put their values in .env (see .env.example), never in this file.",
    ]
    if fleet.gateway:
        lines += [
            f"# {GATEWAY_NAME} runs the image {GATEWAY_IMAGE}, with `tokengate` on its PATH: build it from the",
            f"# Tokengate source first (docker build -t {GATEWAY_IMAGE} .). It reads {GATEWAY_FLEET_FILE}, kept",
            "# next to this file: the fleet with every engine reached at its compose service name.",
        ]
    return "\n".join(lines) + "\n"


def _env_example(fleet: Fleet) -> str:
    lines = [
        "# Variables docker-compose.yml references. Copy to .env and fill in; never commit .env.",
        "",
        "# Host folder of the Hugging Face cache, mounted into every engine.",
        "HF_CACHE=~/.cache/huggingface",
    ]
    for name, users in secret_variables(fleet).items():
        used_by = "; ".join(users)
        lines += ["", f"# {used_by[0].upper()}{used_by[1:]}.", f"{name}="]
    return "\n".join(lines) + "\n"


def _port(deployment: Deployment) -> int:
    assert deployment.port is not None  # the schema requires a port on every deployment without a url
    return deployment.port


# --- kubernetes ----------------------------------------------------------------------------------------------------


def render_kubernetes(fleet: Fleet) -> RenderedFiles:
    """One multi-document `kubernetes.yaml`: the HF cache claim, then a Deployment and Service per engine, then
    the gateway (ConfigMap with its fleet, Deployment, Service).

    The Hugging Face cache is one PersistentVolumeClaim shared by every engine (ReadWriteMany), so a model is
    downloaded once per cluster rather than once per pod. Engines use the `Recreate` strategy: a new pod cannot
    get the GPUs while the old one holds them.
    """
    engines = engine_deployments(fleet)
    documents: list[dict[str, Any]] = []
    if engines:
        documents.append(_hf_cache_claim(engines))
    for deployment in engines:
        documents += [_k8s_engine(deployment), _k8s_service(k8s_name(deployment.name), "engine", _port(deployment))]
    if fleet.gateway:
        documents += _k8s_gateway(fleet, fleet.gateway, engines)
    text = _kubernetes_header(fleet) + yaml.safe_dump_all(
        documents, sort_keys=False, explicit_start=True, width=_YAML_WIDTH
    )
    return RenderedFiles(files={"kubernetes.yaml": text})


def k8s_name(name: str) -> str:
    """A DNS-1035 label: valid for a Service, and so for every other object here."""
    label = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if not label[:1].isalpha():
        label = f"tg-{label}"
    return label[:63].rstrip("-")


def secret_name(reference: str) -> str:
    """`${VLLM_API_KEY_MICRO}` → `vllm-api-key-micro`, the Secret holding its value under the key `value`."""
    return k8s_name(_variable(reference).replace("_", "-"))


def _labels(name: str, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/part-of": KUBERNETES_PART_OF,
    }


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": name, "app.kubernetes.io/part-of": KUBERNETES_PART_OF}


def _secret_env(name: str, reference: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret_name(reference), "key": SECRET_KEY}}}


def _hf_cache_claim(engines: list[Deployment]) -> dict[str, Any]:
    distinct = {d.model: model_weight_bytes(d.model) or 0 for d in engines}
    size_gib = max(50, math.ceil(sum(distinct.values()) * 1.5 / GIB))
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": HF_CACHE_CLAIM, "labels": _labels(HF_CACHE_CLAIM, "cache")},
        "spec": {"accessModes": ["ReadWriteMany"], "resources": {"requests": {"storage": f"{size_gib}Gi"}}},
    }


def _k8s_engine(deployment: Deployment) -> dict[str, Any]:
    name = k8s_name(deployment.name)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": _labels(name, "engine")},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": _selector(name)},
            "template": {
                "metadata": {"labels": _labels(name, "engine")},
                "spec": {"containers": [_k8s_engine_container(deployment)], "volumes": _k8s_volumes(deployment)},
            },
        },
    }


def _k8s_engine_container(deployment: Deployment) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "vllm", "image": deployment.image}
    entrypoint = container_entrypoint(deployment)
    if entrypoint:
        container["command"] = entrypoint
    container["args"] = container_args(deployment)
    container["ports"] = [{"name": "http", "containerPort": _port(deployment)}]
    env: list[dict[str, Any]] = [{"name": key, "value": value} for key, value in deployment.env.items()]
    if deployment.api_key:
        env.append(_secret_env("VLLM_API_KEY", deployment.api_key))
    if env:
        container["env"] = env
    if deployment.gpus:
        container["resources"] = {"limits": {"nvidia.com/gpu": len(deployment.gpus)}}
    startup = startup_seconds(deployment)
    container["readinessProbe"] = {
        "httpGet": _health(),
        "initialDelaySeconds": startup,
        "periodSeconds": 10,
        "failureThreshold": 3,
    }
    # Generous: a busy engine answers /health late, and a restart costs a full reload of the weights.
    container["livenessProbe"] = {
        "httpGet": _health(),
        "initialDelaySeconds": startup,
        "periodSeconds": 30,
        "timeoutSeconds": 10,
        "failureThreshold": 10,
    }
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}, {"name": "hf-cache", "mountPath": HF_CACHE_MOUNT}]
    model_dir = local_model_dir(deployment)
    if model_dir:
        mounts.append({"name": "model", "mountPath": model_dir, "readOnly": True})
    container["volumeMounts"] = mounts
    return container


def _health() -> dict[str, str]:
    return {"path": "/health", "port": "http"}  # a new dict each time: a shared one would dump as a YAML alias


def _k8s_volumes(deployment: Deployment) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
        {"name": "hf-cache", "persistentVolumeClaim": {"claimName": HF_CACHE_CLAIM}},
    ]
    model_dir = local_model_dir(deployment)
    if model_dir:
        volumes.append({"name": "model", "hostPath": {"path": model_dir, "type": "Directory"}})
    return volumes


def _k8s_service(name: str, component: str, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": _labels(name, component)},
        "spec": {
            "selector": _selector(name),
            "ports": [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _k8s_gateway(fleet: Fleet, gateway: Gateway, engines: list[Deployment]) -> list[dict[str, Any]]:
    config_map = f"{GATEWAY_NAME}-fleet"
    fleet_text = gateway_fleet_text(fleet, {d.name: k8s_name(d.name) for d in engines})
    env = [_secret_env(name, f"${{{name}}}") for name in secret_variables(fleet)]
    container: dict[str, Any] = {
        "name": "gateway",
        "image": GATEWAY_IMAGE,
        "command": list(GATEWAY_COMMAND),
        "ports": [{"name": "http", "containerPort": gateway.port}],
        "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "volumeMounts": [{"name": "fleet", "mountPath": str(Path(GATEWAY_FLEET_MOUNT).parent), "readOnly": True}],
    }
    if env:
        container["env"] = env
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": GATEWAY_NAME, "labels": _labels(GATEWAY_NAME, "gateway")},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": _selector(GATEWAY_NAME)},
            "template": {
                "metadata": {"labels": _labels(GATEWAY_NAME, "gateway")},
                "spec": {
                    "containers": [container],
                    "volumes": [{"name": "fleet", "configMap": {"name": config_map}}],
                },
            },
        },
    }
    config = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map, "labels": _labels(config_map, "gateway")},
        "data": {Path(GATEWAY_FLEET_MOUNT).name: fleet_text},
    }
    return [config, deployment, _k8s_service(GATEWAY_NAME, "gateway", gateway.port)]


def _kubernetes_header(fleet: Fleet) -> str:
    lines = [
        "# Generated by `tokengate render --to k8s`. Apply with: kubectl apply -f kubernetes.yaml",
        f"# The Hugging Face cache is the PersistentVolumeClaim {HF_CACHE_CLAIM}, shared by every engine: it asks",
        "# for ReadWriteMany (an NFS-like storage class); on a single GPU node ReadWriteOnce works too.",
        "# GPUs are counted (nvidia.com/gpu), not chosen: the fleet's device ids do not apply here.",
        "# Local model folders are mounted from the node with hostPath at the same path.",
    ]
    variables = secret_variables(fleet)
    if variables:
        lines.append("# Create the Secrets first; this file only names them:")
        for name in variables:
            secret = secret_name(f"${{{name}}}")
            lines.append(f'#   kubectl create secret generic {secret} --from-literal={SECRET_KEY}="${name}"')
    if fleet.gateway:
        lines.append(f"# {GATEWAY_NAME} runs the image {GATEWAY_IMAGE} (build it from the Tokengate source).")
    return "\n".join(lines) + "\n"


# --- plain vllm serve ----------------------------------------------------------------------------------------------


def render_vllm(fleet: Fleet) -> RenderedFiles:
    """`launch.sh`: every engine started in the background on this host; stopping the script stops them."""
    lines = [
        "#!/usr/bin/env bash",
        "# Generated by `tokengate render --to vllm`: one vLLM server per deployment, stopped together.",
        "set -euo pipefail",
        "trap 'kill $(jobs -p) 2>/dev/null || true' INT TERM EXIT",
    ]
    for deployment in engine_deployments(fleet):
        lines += ["", f"# {deployment.name}: {deployment.model}", launch_line(deployment)]
    lines += ["", "wait"]
    return RenderedFiles(files={"launch.sh": "\n".join(lines) + "\n"})


def launch_line(deployment: Deployment) -> str:
    """One shell line starting the deployment in the background; its API key stays a `${VAR}` reference."""
    prefix: list[str] = []
    if deployment.gpus:
        prefix.append("CUDA_VISIBLE_DEVICES=" + ",".join(str(gpu) for gpu in deployment.gpus))
    prefix += [f"{name}={shlex.quote(value)}" for name, value in deployment.env.items()]
    if deployment.api_key:
        prefix.append(f'VLLM_API_KEY="{deployment.api_key}"')
    return " ".join([*prefix, shlex.join(vllm_argv(deployment)), "&"])
