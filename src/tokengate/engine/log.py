"""What a vLLM log says about its KV cache and, when it died, why."""

from __future__ import annotations

import re

from pydantic import BaseModel

_KV_CACHE_SIZE = re.compile(
    r"(?P<device>GPU|CPU|[A-Z]+) KV cache size: (?P<tokens>[\d,]+) tokens, "
    r"Maximum concurrency for (?P<length>[\d,]+) tokens per request: (?P<concurrency>[\d.]+)x"
)
# Older vLLM wrote "models's" and no parenthesis before the needed size; logs may wrap lines.
_NOT_ENOUGH_KV = re.compile(
    r"To serve at least one request with the models?'s max seq len \((?P<length>\d+)\),\s+"
    r"\(?(?P<needed>[\d.]+) GiB KV cache is needed, which is larger than the available KV cache memory\s+"
    r"\((?P<available>[\d.]+) GiB\)\.(?:\s+Based on the available memory, the estimated maximum model length "
    r"is (?P<estimate>\d+)\.)?"
)


class KvCacheReport(BaseModel):
    """vLLM's 'KV cache size: N tokens, Maximum concurrency for M tokens per request: X' line."""

    device: str
    kv_cache_tokens: int
    max_model_len: int
    max_concurrency: float


class NotEnoughKvCache(BaseModel):
    """vLLM's 'To serve at least one request with the model's max seq len' startup error."""

    max_model_len: int
    needed_gib: float
    available_gib: float
    estimated_max_model_len: int | None


def parse_kv_cache_report(log: str) -> KvCacheReport | None:
    match = _KV_CACHE_SIZE.search(log)
    if not match:
        return None
    return KvCacheReport(
        device=match["device"],
        kv_cache_tokens=int(match["tokens"].replace(",", "")),
        max_model_len=int(match["length"].replace(",", "")),
        max_concurrency=float(match["concurrency"]),
    )


def parse_not_enough_kv_cache(log: str) -> NotEnoughKvCache | None:
    match = _NOT_ENOUGH_KV.search(log)
    if not match:
        return None
    return NotEnoughKvCache(
        max_model_len=int(match["length"]),
        needed_gib=float(match["needed"]),
        available_gib=float(match["available"]),
        estimated_max_model_len=int(match["estimate"]) if match["estimate"] else None,
    )
