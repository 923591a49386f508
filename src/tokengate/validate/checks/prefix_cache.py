"""Prefix cache: a long salted prompt sent twice; the engine's counters (or `cached_tokens`) show the hit."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import httpx

from tokengate.validate.check import Check
from tokengate.validate.endpoint import Endpoint
from tokengate.validate.fixes import start_vllm_with
from tokengate.validate.probe import Probe
from tokengate.validate.prompts import salted_prompt, tokens_per_word
from tokengate.validate.result import Outcome
from tokengate.validate.stream import StreamedChat

TARGET_PROMPT_TOKENS = 1800
QUERIES = "vllm:prefix_cache_queries_total"
HITS = "vllm:prefix_cache_hits_total"
FROM_METRICS = f"engine /metrics {HITS}"
FROM_USAGE = "usage.prompt_tokens_details.cached_tokens"
ENABLE = "--enable-prefix-caching"
NOT_DISABLED = "(not --no-enable-prefix-caching)"


@dataclass
class Repeat:
    """The second of two identical requests, and what the server says it reused."""

    prompt_tokens: int
    first_ttft_ms: float | None
    second_ttft_ms: float | None
    hit_tokens: int | None = None
    source: str = ""
    enabled_label: str | None = None  # vLLM's cache_config_info: "True" / "False"

    @property
    def timings(self) -> str:
        if self.first_ttft_ms is None or self.second_ttft_ms is None:
            return "time to first token not measured"
        return f"time to first token {self.first_ttft_ms:.0f} → {self.second_ttft_ms:.0f} ms"

    def evidence(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "hit_tokens": self.hit_tokens,
            "evidence": self.source,
            "time_to_first_token_ms": [self.first_ttft_ms, self.second_ttft_ms],
        }


def prefix_cache(probe: Probe) -> Outcome:
    limit = probe.learned.max_model_len
    wanted = min(TARGET_PROMPT_TOKENS, limit // 2) if limit else TARGET_PROMPT_TOKENS
    words = max(50, int(wanted / tokens_per_word(probe.endpoint, probe.target.model)))
    body = probe.body(salted_prompt(words, secrets.token_hex(6)), 2, stream_options={"include_usage": True})
    with probe.other(probe.target.metrics_url) as engine:
        first_reply, first = probe.endpoint.stream_chat(body)
        before = _counters(engine)
        second_reply, second = probe.endpoint.stream_chat(body)
        after = _counters(engine)
        enabled = _enabled_label(engine)
    for reply in (first_reply, second_reply):
        if not reply.ok:
            return Outcome.failed(
                f"the {words}-word prompt was refused: {reply.status} {reply.error}",
                "read the engine log for this request",
            )
    repeat = Repeat(int((second.usage or {}).get("prompt_tokens") or 0), _ms(first), _ms(second), enabled_label=enabled)
    cached = ((second.usage or {}).get("prompt_tokens_details") or {}).get("cached_tokens")
    if before is not None and after is not None:
        repeat.hit_tokens, repeat.source = int(after.get(HITS, 0) - before.get(HITS, 0)), FROM_METRICS
    elif isinstance(cached, int):
        repeat.hit_tokens, repeat.source = cached, FROM_USAGE
    else:
        return _no_evidence(probe, repeat)
    return _verdict(probe, repeat)


def _verdict(probe: Probe, repeat: Repeat) -> Outcome:
    hit = repeat.hit_tokens or 0
    seen = f"{hit} of {repeat.prompt_tokens} prompt tokens hit on the repeat ({repeat.source}); {repeat.timings}"
    if repeat.prompt_tokens and hit * 2 >= repeat.prompt_tokens:
        return Outcome.passed(seen, **repeat.evidence())
    if hit == 0:
        off = "; the engine reports enable_prefix_caching=False" if repeat.enabled_label == "False" else ""
        return Outcome.failed(seen + off, start_vllm_with(probe.target, ENABLE, note=NOT_DISABLED), **repeat.evidence())
    return Outcome.failed(
        seen + ": most of the prompt was evicted between two requests",
        "give the KV cache more room (--gpu-memory-utilization or --kv-cache-memory-bytes) or lower --max-num-seqs",
        **repeat.evidence(),
    )


def _no_evidence(probe: Probe, repeat: Repeat) -> Outcome:
    engine = probe.target.engine
    if engine is not None and not engine.prefix_caching:
        return Outcome.failed(
            f"prefix caching is switched off in the engine args; {repeat.timings}",
            start_vllm_with(probe.target, ENABLE, note=NOT_DISABLED),
            **repeat.evidence(),
        )
    return Outcome.skipped(
        f"no evidence: no vLLM prefix-cache counters at {probe.target.metrics_url}/metrics and no cached_tokens "
        f"in usage; {repeat.timings}",
        start_vllm_with(probe.target, "--enable-prompt-tokens-details")
        + ", or validate with --fleet FILE --gateway from a host that reaches the engine's port (its /metrics)",
        **repeat.evidence(),
    )


def _counters(engine: Endpoint) -> dict[str, float] | None:
    """vLLM's prefix-cache counters, or None when this server has none (a gateway) or cannot be reached."""
    try:
        counters = engine.counters()
    except httpx.HTTPError:
        return None
    return counters if QUERIES in counters else None


def _enabled_label(engine: Endpoint) -> str | None:
    try:
        return engine.labels("/metrics", "vllm:cache_config_info").get("enable_prefix_caching")
    except httpx.HTTPError:
        return None


def _ms(stream: StreamedChat) -> float | None:
    return round(stream.time_to_first_token_ms, 1) if stream.time_to_first_token_ms is not None else None


CHECKS = (Check("prefix_cache.hit", prefix_cache),)
