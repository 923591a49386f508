"""The fleet file: what should run, where, and the gateway in front of it.

Strict (`extra="forbid"`): a typo in a fleet file is an error that names the
field. Engine arguments are the exception: the ones Tokengate reasons about are
typed, any other `vllm serve` flag passes through untouched.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tokengate.fleet.engine_args import EngineArgs

SECRET_REFERENCE = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*\}$")
VLLM_SERVE = ("vllm", "serve")
CPU_API_SERVER = ("python3", "-m", "vllm.entrypoints.openai.api_server")


class Runtime(StrEnum):
    LOCAL = "local"
    DOCKER = "docker"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _secret(value: str | None) -> str | None:
    if value is not None and not SECRET_REFERENCE.match(value):
        raise ValueError("secrets are written as a reference such as ${VLLM_API_KEY}, never inline")
    return value


class Deployment(Strict):
    """One vLLM server: started by `up` (local or docker), or external when `url` is given."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$", description="Lowercase letters, digits and dashes.")
    model: str = Field(description="Model id (catalog or hub) or a local model directory.")
    served_model_name: list[str] = Field(default_factory=list, description="Names clients use; default: model.")
    gpu: str = Field("cpu", description="GPU kind from `tokengate gpus`.")
    gpus: list[int] = Field(default_factory=list, description="Device ids, e.g. [0, 1]; empty for the CPU.")
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    runtime: Runtime = Runtime.LOCAL
    image: str = Field("vllm/vllm-openai:latest", description="Container image when runtime is docker.")
    command: list[str] = Field(default_factory=lambda: list(VLLM_SERVE), description="How to start vLLM.")
    engine_args: EngineArgs = Field(default_factory=EngineArgs)
    env: dict[str, str] = Field(default_factory=dict)
    api_key: str | None = Field(None, description="Reference to the upstream vLLM API key, e.g. ${VLLM_API_KEY}.")
    health_timeout: float = Field(600, gt=0, description="Seconds to wait for /health.")
    url: str | None = Field(None, description="External engine already running: `up` does not start it.")
    family: str | None = Field(None, description="Override the family detected from the model.")
    vllm_version: str | None = Field(
        None, description="The engine's vLLM version, when known: repairs it does not need are skipped."
    )

    @field_validator("served_model_name", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("engine_args", mode="before")
    @classmethod
    def _engine_args(cls, value: Any) -> Any:
        return engine_args_from_mapping(value) if isinstance(value, dict) else value

    @field_validator("api_key")
    @classmethod
    def _api_key(cls, value: str | None) -> str | None:
        return _secret(value)

    @model_validator(mode="after")
    def _port_or_url(self) -> Deployment:
        if self.url is None and self.port is None:
            raise ValueError(f"deployment {self.name!r} needs a port (or a url for an external engine)")
        return self

    @property
    def external(self) -> bool:
        return self.url is not None

    @property
    def names(self) -> list[str]:
        return self.served_model_name or [self.model]

    @property
    def base_url(self) -> str:
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in {"0.0.0.0", "::"} else self.host
        return f"http://{host}:{self.port}"

    @property
    def tensor_parallel_size(self) -> int:
        return self.engine_args.tensor_parallel_size


def engine_args_from_mapping(raw: dict[str, Any]) -> EngineArgs:
    """YAML engine args, with dashes or underscores; unknown flags go to passthrough as strings."""
    typed: dict[str, Any] = {}
    passthrough: dict[str, str | bool] = dict(raw.get("passthrough") or {})
    for key, value in raw.items():
        if key == "passthrough":
            continue
        name = str(key).removeprefix("--").replace("-", "_")
        if name in EngineArgs.model_fields and name != "passthrough":
            typed[name] = [value] if name == "served_model_name" and isinstance(value, str) else value
        elif isinstance(value, dict | list):
            passthrough[name] = json.dumps(value, separators=(",", ":"))
        else:
            passthrough[name] = value if isinstance(value, bool) else str(value)
    return EngineArgs(**typed, passthrough=passthrough)


class GatewayKey(Strict):
    name: str
    key: str = Field(description="Reference to the key, e.g. ${TOKENGATE_KEY_ALICE}.")
    models: list[str] = Field(default_factory=lambda: ["*"], description="Models this key may use.")
    tokens_per_day: int | None = Field(None, ge=0)

    @field_validator("key")
    @classmethod
    def _key(cls, value: str) -> str:
        return _secret(value) or value


class Route(Strict):
    model: str = Field(description="The name clients send.")
    deployment: str = Field(description="Deployment that serves it.")
    prefix_cache_preservation: bool | None = Field(
        None, description="Override the gateway's prefix_cache_preservation for this name (Anthropic requests)."
    )


class Gateway(Strict):
    listen: str = "127.0.0.1:8080"
    auth: str = Field("keys", pattern="^(keys|none)$", description="keys (default) or none: open to anyone.")
    max_body_bytes: int = Field(32 * 1024 * 1024, gt=0, description="Larger request bodies get a 413.")
    upstream_idle_timeout: float = Field(
        600.0,
        gt=0,
        description="Seconds an engine may send nothing (before its answer begins, or within a stream) before the "
        "request is given up: a 504, or an error event in a stream. A whole (non-streamed) answer begins only when "
        "generation ends, so keep it above your longest generation.",
    )
    prefix_cache_preservation: bool = Field(
        True,
        description="Anthropic requests: drop per-request volatile system lines (Claude Code's billing-header "
        "nonce) and write tools in one canonical form, so consecutive turns share their prefix in vLLM's cache.",
    )
    keys: list[GatewayKey] = Field(default_factory=list)
    routes: list[Route] = Field(default_factory=list)

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0] or "127.0.0.1"

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class Fleet(Strict):
    version: int = 1
    state_dir: str = Field(".tokengate", description="Where `up` keeps logs and process state.")
    deployments: list[Deployment]
    gateway: Gateway | None = None

    @model_validator(mode="after")
    def _unique(self) -> Fleet:
        names = [d.name for d in self.deployments]
        duplicates = {n for n in names if names.count(n) > 1}
        if duplicates:
            raise ValueError(f"deployment names must be unique: {', '.join(sorted(duplicates))}")
        ports = [(d.host, d.port) for d in self.deployments if d.port and not d.external]
        clashing = {p for p in ports if ports.count(p) > 1}
        if clashing:
            raise ValueError(f"two deployments listen on port {sorted(clashing)[0][1]}")
        if self.gateway:
            for route in self.gateway.routes:
                if route.deployment not in names:
                    raise ValueError(f"gateway route {route.model!r} names unknown deployment {route.deployment!r}")
        return self

    def deployment(self, name: str) -> Deployment:
        for deployment in self.deployments:
            if deployment.name == name:
                return deployment
        raise KeyError(name)
