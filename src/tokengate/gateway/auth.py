"""Who is calling: API keys from the key store or the fleet file, and what each may use."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tokengate.fleet.loader import resolve_secret
from tokengate.fleet.schema import Gateway
from tokengate.gateway.keys import key_hash


@dataclass(frozen=True)
class Identity:
    name: str
    models: tuple[str, ...] = ("*",)
    tokens_per_day: int | None = None
    max_concurrent: int | None = None

    def allows(self, model: str) -> bool:
        return "*" in self.models or model in self.models


OPEN = Identity(name="anonymous")
KeyLookup = Callable[[str], Identity | None]


def presented_key(headers: Mapping[str, str]) -> str | None:
    """`Authorization: Bearer KEY` (OpenAI SDKs) or `x-api-key: KEY` (Anthropic SDKs)."""
    authorization = headers.get("authorization")
    if authorization and authorization[:7].lower() == "bearer ":
        return authorization[7:].strip() or None
    return headers.get("x-api-key") or None


def fleet_keys(gateway: Gateway, environ: Mapping[str, str] | None = None) -> KeyLookup:
    """Keys declared in the fleet file by reference, resolved from the environment once at startup."""
    by_hash: dict[str, Identity] = {}
    for key in gateway.keys:
        plaintext = resolve_secret(key.key, environ)
        if plaintext:
            identity = Identity(name=key.name, models=tuple(key.models), tokens_per_day=key.tokens_per_day)
            by_hash[key_hash(plaintext)] = identity
    return lambda plaintext: by_hash.get(key_hash(plaintext))


def chain(*lookups: KeyLookup) -> KeyLookup:
    def lookup(plaintext: str) -> Identity | None:
        for each in lookups:
            found = each(plaintext)
            if found is not None:
                return found
        return None

    return lookup
