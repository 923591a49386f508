"""Limits: a prompt longer than max_model_len is refused with a clear 4xx, not a 500 or a silent truncation."""

from __future__ import annotations

from tokengate.validate.check import Check
from tokengate.validate.probe import Probe
from tokengate.validate.prompts import over_limit_prompt
from tokengate.validate.result import Outcome, clip, first_sentence

REFUSALS = (400, 413, 422)


def context_limit(probe: Probe) -> Outcome:
    limit = probe.learned.max_model_len
    if limit is None:
        return Outcome.skipped(
            "max_model_len unknown: neither /v1/models nor /tokenize reported it",
            "validate with --fleet so the engine args give --max-model-len",
        )
    reply = probe.endpoint.chat(probe.body(over_limit_prompt(limit), 1))
    words = limit + 64
    if reply.status in REFUSALS and reply.error:
        return Outcome.passed(
            f"{reply.status} for {words}+ tokens: {first_sentence(reply.error)}",
            status=reply.status,
            message=reply.error,
            max_model_len=limit,
        )
    if reply.status in REFUSALS:
        return Outcome.failed(
            f"refused with {reply.status} but no message",
            "make the proxy in front of vLLM pass the engine's error body through",
        )
    if reply.ok:
        return Outcome.failed(
            f"a prompt of more than {words} tokens was answered although max_model_len is {limit}",
            "the server truncates prompts or reports the wrong length: check --max-model-len and remove any "
            "truncate_prompt_tokens default",
        )
    if reply.status >= 500:
        return Outcome.failed(
            f"answered {reply.status} (a server error) to an over-long prompt: {clip(reply.error)}",
            "read the engine log: it should refuse with 400; upgrade vLLM if it crashes here",
        )
    return Outcome.failed(f"answered {reply.status}: {clip(reply.error)}", "read the server's message above")


CHECKS = (Check("limits.context", context_limit),)
