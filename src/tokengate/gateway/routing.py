"""Which engine serves a request: by model name, least outstanding requests, skipping unhealthy replicas."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property

from tokengate.errors import TokengateError
from tokengate.fleet.loader import resolve_secret
from tokengate.fleet.schema import Deployment, Fleet
from tokengate.gateway.repairs import RepairKind, repairs_for
from tokengate.gateway.upstream import Origin
from tokengate.models import family_in_name, load_model_spec

UNHEALTHY_RETRY_SECONDS = 2.0


@dataclass
class Replica:
    """One engine behind a model name."""

    deployment: str
    base_url: str
    family: str
    repairs: tuple[RepairKind, ...]
    api_key: str | None = None
    served_names: tuple[str, ...] = ()  # what the engine answers to; another name (a route alias) is rewritten
    outstanding: int = 0
    unhealthy_until: float = 0.0
    passes_health: bool = True  # the last /health probe's verdict
    max_model_len: int | None = None  # the engine's context length, from its /v1/models once it is healthy

    def available(self, now: float) -> bool:
        return self.passes_health and now >= self.unhealthy_until

    @cached_property
    def origin(self) -> Origin:
        """Where requests go, with what each carries: the body type, and the engine's API key (never the client's)."""
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return Origin(self.base_url, headers)

    def engine_model(self, requested: str) -> str:
        """The model name to send the engine: a gateway route's alias becomes the engine's own served name."""
        if not self.served_names or requested in self.served_names:
            return requested
        return self.served_names[0]

    def mark_unhealthy(self) -> None:
        self.unhealthy_until = time.monotonic() + UNHEALTHY_RETRY_SECONDS


@dataclass
class Router:
    routes: dict[str, list[Replica]] = field(default_factory=dict)
    prefix_cache_preservation: bool = True  # for Anthropic requests; see gateway.prefix_cache
    preservation_by_model: dict[str, bool] = field(default_factory=dict)  # per-route overrides

    def preserves_prefix(self, model: str) -> bool:
        return self.preservation_by_model.get(model, self.prefix_cache_preservation)

    @property
    def replicas(self) -> list[Replica]:
        unique: dict[str, Replica] = {}
        for replicas in self.routes.values():
            for replica in replicas:
                unique[replica.deployment] = replica
        return list(unique.values())

    @property
    def models(self) -> list[str]:
        return sorted(self.routes)

    def max_model_len(self, model: str) -> int | None:
        """The context every replica of `model` can take (the smallest), once each has reported its own."""
        lengths = [replica.max_model_len for replica in self.routes.get(model, [])]
        return min(lengths) if lengths and None not in lengths else None  # type: ignore[type-var]

    def choose(self, model: str) -> Replica | None:
        """The available replica with the fewest requests in flight; None if every replica is down.

        Raises KeyError for a model nobody serves.
        """
        replicas = self.routes[model]
        now = time.monotonic()
        candidates = [r for r in replicas if r.available(now)]
        if not candidates:
            return None
        return min(candidates, key=lambda replica: replica.outstanding)


def build_router(fleet: Fleet) -> Router:
    """Every served name and gateway route of the fleet, pointing at its deployments (local and external)."""
    replicas = {d.name: _replica(d) for d in fleet.deployments}
    router = Router(prefix_cache_preservation=fleet.gateway.prefix_cache_preservation if fleet.gateway else True)
    for deployment in fleet.deployments:
        for name in deployment.names:
            router.routes.setdefault(name, []).append(replicas[deployment.name])
    for route in fleet.gateway.routes if fleet.gateway else []:
        router.routes.setdefault(route.model, []).append(replicas[route.deployment])
        if route.prefix_cache_preservation is not None:
            router.preservation_by_model[route.model] = route.prefix_cache_preservation
    return router


def _replica(deployment: Deployment) -> Replica:
    family = family_of(deployment)
    return Replica(
        deployment=deployment.name,
        base_url=deployment.base_url,
        family=family,
        repairs=repairs_for(family, deployment.vllm_version),
        api_key=resolve_secret(deployment.api_key),
        served_names=tuple(deployment.names),
    )


def family_of(deployment: Deployment) -> str:
    if deployment.family:
        return deployment.family
    try:
        return load_model_spec(deployment.model).family
    except TokengateError:  # offline with a hub id: judge by its name
        return family_in_name(deployment.model) or "unknown"
