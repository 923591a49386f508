"""The fleet as Kubernetes manifests: a shared Hugging Face cache claim, a Deployment and Service per engine, and
the gateway. Secrets are named, never written.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from tokengate.fleet.schema import Deployment, Fleet, Gateway
from tokengate.plan.render.shared import (
    GATEWAY_COMMAND,
    GATEWAY_FLEET_MOUNT,
    GATEWAY_IMAGE,
    GATEWAY_NAME,
    GIB,
    HF_CACHE_MOUNT,
    YAML_WIDTH,
    RenderedFiles,
    container_args,
    container_entrypoint,
    engine_deployments,
    engine_port,
    gateway_fleet_text,
    local_model_dir,
    model_weight_bytes,
    secret_variables,
    startup_seconds,
    variable_name,
)

HF_CACHE_CLAIM = "tokengate-hf-cache"
SECRET_KEY = "value"
KUBERNETES_PART_OF = "tokengate"


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
        service = _k8s_service(k8s_name(deployment.name), "engine", engine_port(deployment))
        documents += [_k8s_engine(deployment), service]
    if fleet.gateway:
        documents += _k8s_gateway(fleet, fleet.gateway, engines)
    text = _kubernetes_header(fleet) + yaml.safe_dump_all(
        documents, sort_keys=False, explicit_start=True, width=YAML_WIDTH
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
    return k8s_name(variable_name(reference).replace("_", "-"))


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
    container["ports"] = [{"name": "http", "containerPort": engine_port(deployment)}]
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
