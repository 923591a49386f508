"""Chat: one plain answer, and one stream with every piece an OpenAI client relies on."""

from __future__ import annotations

from tokengate.validate.check import Check
from tokengate.validate.probe import Probe
from tokengate.validate.result import Outcome

PROMPT = "Say hello in one short sentence."
MAX_TOKENS = 8
SEED = 0  # the same answer every run, so a verdict can be reproduced
PROXY_FIX = (
    "if a proxy sits between the client and vLLM, make it relay server-sent events unbuffered and untouched "
    "(nginx: proxy_buffering off)"
)


def chat(probe: Probe) -> Outcome:
    reply = probe.endpoint.chat(probe.body(PROMPT, MAX_TOKENS, seed=SEED))
    if not reply.ok:
        return Outcome.failed(
            f"POST /v1/chat/completions answered {reply.status}: {reply.error}",
            "read the engine log for this request; the message above is the server's",
        )
    message = reply.message
    text = (message.get("content") or "") + (message.get("reasoning") or message.get("reasoning_content") or "")
    usage = reply.body.get("usage") or {}
    problems = []
    if not text and not message.get("tool_calls"):
        problems.append("the message has no content, reasoning or tool calls")
    if reply.finish_reason is None:
        problems.append("no finish_reason")
    if not usage.get("completion_tokens"):
        problems.append("no usage.completion_tokens")
    if problems:
        return Outcome.failed("; ".join(problems), "the answer is not OpenAI-shaped: " + PROXY_FIX)
    return Outcome.passed(
        f"{usage.get('completion_tokens')} tokens, finish_reason {reply.finish_reason}",
        prompt_tokens=usage.get("prompt_tokens"),
        completion_tokens=usage.get("completion_tokens"),
    )


def stream(probe: Probe) -> Outcome:
    body = probe.body(PROMPT, MAX_TOKENS, seed=SEED, stream_options={"include_usage": True})
    reply, streamed = probe.endpoint.stream_chat(body)
    if not reply.ok:
        return Outcome.failed(
            f"streamed POST /v1/chat/completions answered {reply.status}: {reply.error}",
            "read the engine log for this request; the message above is the server's",
        )
    problems = []
    if streamed.error:
        problems.append(f"an error event: {streamed.error}")
    if streamed.role != "assistant":
        problems.append("no role chunk (delta.role = assistant)")
    if not streamed.content_deltas + streamed.reasoning_deltas:
        problems.append("no content deltas")
    if streamed.finish_reason is None:
        problems.append("no chunk with finish_reason")
    if not (streamed.usage or {}).get("completion_tokens"):
        problems.append("no usage chunk although stream_options.include_usage was set")
    if not streamed.done:
        problems.append("no data: [DONE]")
    evidence = {
        "content_deltas": streamed.content_deltas,
        "reasoning_deltas": streamed.reasoning_deltas,
        "time_to_first_token_ms": streamed.time_to_first_token_ms,
    }
    if problems:
        return Outcome.failed("; ".join(problems), PROXY_FIX, **evidence)
    return Outcome.passed(
        f"role, {streamed.content_deltas + streamed.reasoning_deltas} deltas, "
        f"finish_reason {streamed.finish_reason}, usage, [DONE]",
        **evidence,
    )


CHECKS = (Check("chat.basic", chat), Check("chat.stream", stream))
