"""Reasoning: the parser moves thinking out of the content; switching thinking off leaves none."""

from __future__ import annotations

from typing import Any

from tokengate.validate.check import Check
from tokengate.validate.fixes import reasoning_parser_flag, start_vllm_with
from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome
from tokengate.validate.target import Target

PROMPT = "Think step by step: a train leaves at 9:40 and arrives at 11:15. How long is the trip?"
MAX_TOKENS = 24
SEED = 0  # the same answer every run, so a verdict can be reproduced
OPEN, CLOSE = "<think>", "</think>"


def _reasoning(message: dict[str, Any]) -> str:
    return message.get("reasoning") or message.get("reasoning_content") or ""


def _think_block(content: str) -> bool:
    """A thinking block left in the content: it opens the answer, or one opens and closes inside it
    (a stray tag mid-text, which random weights write now and then, is not one)."""
    return content.lstrip().startswith(OPEN) or CLOSE in content.partition(OPEN)[2]


def _unparsed(content: str, reasoning: str) -> bool:
    """Thinking the parser did not take out, including a block the chat template opened in the prompt."""
    return _think_block(content) or (not reasoning and CLOSE in content)


def reasoning_on(probe: Probe) -> Outcome:
    reply = probe.endpoint.chat(probe.body(PROMPT, MAX_TOKENS, seed=SEED))
    if not reply.ok:
        return Outcome.failed(f"answered {reply.status}: {reply.error}", "read the engine log for this request")
    content, reasoning = reply.message.get("content") or "", _reasoning(reply.message)
    probe.learned.reasoning_seen = bool(reasoning)
    engine = probe.target.engine
    evidence = {"reasoning_chars": len(reasoning), "content_chars": len(content)}
    if _unparsed(content, reasoning):
        return Outcome.failed(
            "the content carries a <think> block: the thinking is not separated from the answer",
            start_vllm_with(probe.target, reasoning_parser_flag(probe.target)),
            **evidence,
        )
    if reasoning:
        source = f"--reasoning-parser {engine.reasoning_parser}" if engine and engine.reasoning_parser else "probed"
        return Outcome.passed(f"reasoning filled ({len(reasoning)} chars), none in the content ({source})", **evidence)
    if engine is None:
        return Outcome.skipped(
            "no reasoning in the answer; unknown how it is deployed (validate with --fleet to "
            "check against its engine args)",
            **evidence,
        )
    if not engine.reasoning_parser:
        return Outcome.skipped("no --reasoning-parser in the engine args", **evidence)
    return Outcome.failed(
        f"--reasoning-parser {engine.reasoning_parser} is set but the answer has no reasoning field",
        "the parser does not match the model: "
        + start_vllm_with(probe.target, reasoning_parser_flag(probe.target))
        + " for this model's family, or remove the parser if the model does not think",
        **evidence,
    )


def reasoning_off(probe: Probe) -> Outcome:
    engine = probe.target.engine
    if not probe.learned.reasoning_seen and not (engine and engine.reasoning_parser):
        return Outcome.skipped("no reasoning with thinking on, so nothing to switch off")
    reply = probe.endpoint.chat(probe.body(PROMPT, MAX_TOKENS, seed=SEED, **probe.thinking_off()))
    if not reply.ok:
        return Outcome.failed(
            f"with enable_thinking false the server answered {reply.status}: {reply.error}",
            "read the engine log for this request",
        )
    content, reasoning = reply.message.get("content") or "", _reasoning(reply.message)
    evidence = {"reasoning_chars": len(reasoning), "content_chars": len(content)}
    if reasoning or _think_block(content):
        return Outcome.failed(
            "chat_template_kwargs.enable_thinking false still returned reasoning",
            "serve the model's own chat template (it reads enable_thinking): remove --chat-template",
            **evidence,
        )
    if not content:
        return Outcome.failed(
            "with thinking off the answer has no content", "read the engine log for this request", **evidence
        )
    return Outcome.passed("enable_thinking false: no reasoning, content filled", **evidence)


def _takes_switch(target: Target) -> bool:
    return target.takes_thinking_switch


CHECKS = (Check("reasoning.on", reasoning_on), Check("reasoning.off", reasoning_off, _takes_switch))
