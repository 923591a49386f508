"""Anthropic Messages ↔ OpenAI chat completions: pure adapters at the gateway's edge.

A `/v1/messages` request becomes the chat-completions request the engine serves (so the family repairs apply to
it like to any other), and the engine's answer becomes a Messages answer. Tool-call ids stay Anthropic-shaped on
the client's side (`toolu_…`) and engine-shaped on the engine's side; the mapping is a pure function of the id,
so it is the same on every turn and after a gateway restart. Streams are translated by `anthropic_stream`.

Thinking blocks from earlier turns are not sent back to the engine: Anthropic's own API leaves them out of the
context too, and reasoning templates (Qwen3's) drop them from history anyway.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

Body = dict[str, Any]

CLIENT_ID_PREFIX = "toolu_"
_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Families whose chat templates read `enable_thinking` (Mistral's tokenizer takes no template kwargs at all).
THINKING_SWITCH_FAMILIES = frozenset({"qwen3"})

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use", "function_call": "tool_use"}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    529: "overloaded_error",
}


class TranslationError(ValueError):
    """The Messages request cannot be expressed for the engine; the message names the field."""


# --- ids -------------------------------------------------------------------------------------------------------


def client_tool_id(engine_id: str) -> str:
    return CLIENT_ID_PREFIX + _ID_UNSAFE.sub("_", engine_id)


def engine_tool_id(client_id: str) -> str:
    """The inverse of `client_tool_id`; ids from elsewhere (a conversation begun on Claude) map to themselves
    without the prefix, the same way in a `tool_use` block and in its `tool_result`."""
    return client_id.removeprefix(CLIENT_ID_PREFIX) or client_id


# --- request ---------------------------------------------------------------------------------------------------


def messages_to_chat(request: Body, *, stream: bool = False) -> Body:
    """The chat-completions body for a Messages body (the `model` is kept as sent; see `thinking_switch`)."""
    messages = request.get("messages")
    if not isinstance(messages, list):
        raise TranslationError("`messages` must be a list of {role, content} objects")
    chat: Body = {"model": request.get("model"), "messages": []}
    system = system_text(request.get("system"))
    if system:
        chat["messages"].append({"role": "system", "content": system})
    for index, message in enumerate(messages):
        chat["messages"] += _chat_messages(message, index)
    chat.update(_sampling(request))
    tools = [_chat_tool(tool, i) for i, tool in enumerate(request.get("tools") or []) if _is_custom_tool(tool)]
    if tools:
        chat["tools"] = tools
        _apply_tool_choice(chat, request.get("tool_choice"))
    if stream:
        chat["stream"] = True
        # Usage on every chunk: the first one already says how long the prompt is, for `message_start`.
        chat["stream_options"] = {"include_usage": True, "continuous_usage_stats": True}
    return chat


def thinking_switch(request: Body, family: str) -> Body:
    """`thinking: {type: enabled|disabled}` as the chat-template switch, for families whose templates take one."""
    thinking = request.get("thinking")
    if not isinstance(thinking, dict) or family not in THINKING_SWITCH_FAMILIES:
        return {}
    return {"chat_template_kwargs": {"enable_thinking": thinking.get("type") != "disabled"}}


def _sampling(request: Body) -> Body:
    chosen: Body = {name: request[name] for name in ("max_tokens", "temperature", "top_p", "top_k", "seed")
                    if request.get(name) is not None}  # fmt: skip
    stops = request.get("stop_sequences")
    if stops:
        if not isinstance(stops, list) or not all(isinstance(stop, str) for stop in stops):
            raise TranslationError("`stop_sequences` must be a list of strings")
        chosen["stop"] = stops
    metadata = request.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise TranslationError('`metadata` must be an object such as {"user_id": "..."}')
    user = (metadata or {}).get("user_id")
    if isinstance(user, str):
        chosen["user"] = user
    return chosen


def system_text(system: Any) -> str:
    if system is None:
        return ""
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(_text_of(block, "system") for block in system)
    raise TranslationError("`system` must be a string or a list of text blocks")


def _text_of(block: Any, where: str) -> str:
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return block["text"]
    raise TranslationError(f"`{where}` blocks must be {{type: text, text: ...}}")


def _chat_messages(message: Any, index: int) -> list[Body]:
    where = f"messages[{index}]"
    if not isinstance(message, dict) or message.get("role") not in ("user", "assistant"):
        raise TranslationError(f"`{where}.role` must be user or assistant")
    content = message.get("content")
    if isinstance(content, str):
        return [{"role": message["role"], "content": content}]
    if not isinstance(content, list):
        raise TranslationError(f"`{where}.content` must be a string or a list of content blocks")
    if message["role"] == "assistant":
        return [_assistant_message(content, where)]
    return _user_messages(content, where)


def _assistant_message(blocks: list[Any], where: str) -> Body:
    texts: list[str] = []
    calls: list[Body] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(
                {
                    "id": engine_tool_id(str(block.get("id") or "")),
                    "type": "function",
                    "function": {
                        "name": block.get("name"),
                        "arguments": orjson.dumps(block.get("input") or {}).decode(),
                    },
                }
            )
        elif kind in ("thinking", "redacted_thinking"):
            continue
        else:
            raise TranslationError(f"`{where}.content`: an assistant block of type {kind!r} is not supported")
    message: Body = {"role": "assistant", "content": "".join(texts) if texts else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _user_messages(blocks: list[Any], where: str) -> list[Body]:
    """Tool results become `role: tool` messages, placed first so they follow the assistant's tool calls."""
    results: list[Body] = []
    parts: list[Body] = []
    for block in blocks:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "tool_result":
            results.append(
                {
                    "role": "tool",
                    "tool_call_id": engine_tool_id(str(block.get("tool_use_id") or "")),
                    "content": _tool_result_text(block, where),
                }
            )
        elif kind == "text":
            parts.append({"type": "text", "text": _text_of(block, f"{where}.content")})
        elif kind == "image":
            parts.append({"type": "image_url", "image_url": {"url": _image_url(block, where)}})
        elif kind == "document":
            raise TranslationError(f"`{where}.content`: document blocks are not supported; send the text instead")
        else:
            raise TranslationError(f"`{where}.content`: a user block of type {kind!r} is not supported")
    if not parts:
        return results
    if all(part["type"] == "text" for part in parts):  # the string form every chat template takes
        return [*results, {"role": "user", "content": "\n".join(part["text"] for part in parts)}]
    return [*results, {"role": "user", "content": parts}]


def _tool_result_text(block: Body, where: str) -> str:
    content = block.get("content")
    if content is None:
        text = ""
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        pieces = []
        for item in content:
            kind = item.get("type") if isinstance(item, dict) else None
            if kind == "text":
                pieces.append(item.get("text") or "")
            elif kind == "image":
                pieces.append("[image]")  # an OpenAI tool message carries text only
            else:
                raise TranslationError(f"`{where}`: a tool_result block of type {kind!r} is not supported")
        text = "\n".join(pieces)
    else:
        raise TranslationError(f"`{where}`: tool_result content must be a string or a list of blocks")
    return f"Error: {text}" if block.get("is_error") else text


def _image_url(block: Body, where: str) -> str:
    source = block.get("source")
    if not isinstance(source, dict):
        raise TranslationError(f"`{where}`: an image block's `source` must be {{type: base64|url, ...}}")
    if source.get("type") == "base64":
        return f"data:{source.get('media_type', 'image/png')};base64,{source.get('data', '')}"
    if source.get("type") == "url" and isinstance(source.get("url"), str):
        return source["url"]
    raise TranslationError(f"`{where}`: image source must be base64 or url")


def _is_custom_tool(tool: Any) -> bool:
    """Client tools (name + input_schema); Anthropic's server tools (web search, …) have no engine equivalent."""
    return isinstance(tool, dict) and tool.get("type") in (None, "custom") and "input_schema" in tool


def _chat_tool(tool: Body, index: int) -> Body:
    if not isinstance(tool.get("name"), str):
        raise TranslationError(f"`tools[{index}].name` is required")
    function: Body = {"name": tool["name"], "parameters": tool.get("input_schema") or {"type": "object"}}
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict"):
        function["strict"] = True
    return {"type": "function", "function": function}


def _apply_tool_choice(chat: Body, choice: Any) -> None:
    if not isinstance(choice, dict):
        return
    kind = choice.get("type")
    if kind == "auto":
        chat["tool_choice"] = "auto"
    elif kind == "any":
        chat["tool_choice"] = "required"
    elif kind == "none":
        chat["tool_choice"] = "none"
    elif kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise TranslationError("`tool_choice.name` is required when `tool_choice.type` is tool")
        chat["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise TranslationError("`tool_choice.type` must be auto, any, tool or none")
    if choice.get("disable_parallel_tool_use"):
        chat["parallel_tool_calls"] = False


# --- response --------------------------------------------------------------------------------------------------


def chat_to_message(completion: Body, *, model: str, stop_sequences: list[str] | None = None) -> Body:
    """A Messages answer from a (non-streamed) chat completion."""
    choice = (completion.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[Body] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning:
        content.append({"type": "thinking", "thinking": reasoning, "signature": ""})
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        content.append(
            {
                "type": "tool_use",
                "id": client_tool_id(str(call.get("id") or "")),
                "name": function.get("name"),
                "input": tool_input(function.get("arguments")),
            }
        )
    reason, sequence = stop_reason(choice, bool(message.get("tool_calls")), stop_sequences)
    return {
        "id": message_id(completion),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": message_usage(completion.get("usage") or {}),
    }


def message_id(completion: Body) -> str:
    raw = str(completion.get("id") or "")
    return "msg_" + _ID_UNSAFE.sub("", raw.removeprefix("chatcmpl-"))


def tool_input(arguments: Any) -> Body:
    """Arguments as an object; the engine's text that is not a JSON object becomes {} rather than a client crash."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def stop_reason(choice: Body, has_tool_calls: bool, stop_sequences: list[str] | None) -> tuple[str | None, str | None]:
    """(stop_reason, stop_sequence). A named tool choice ends with finish_reason "stop" and a tool call; a tool
    call cut off by max_tokens is reported as max_tokens, as Anthropic does."""
    finish = choice.get("finish_reason")
    if finish == "length":
        return "max_tokens", None
    if has_tool_calls:
        return "tool_use", None
    matched = choice.get("stop_reason")
    if finish == "stop" and isinstance(matched, str) and stop_sequences and matched in stop_sequences:
        return "stop_sequence", matched
    if finish is None:
        return None, None
    return STOP_REASONS.get(finish, "end_turn"), None


def message_usage(usage: Body) -> Body:
    """Anthropic counts cache reads apart from `input_tokens`; vLLM reports them inside `prompt_tokens`."""
    prompt = int(usage.get("prompt_tokens") or 0)
    cached = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0)
    return {
        "input_tokens": max(prompt - cached, 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": 0,
    }


# --- errors ----------------------------------------------------------------------------------------------------


def error_type(status: int) -> str:
    return _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")


def error_body(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": error_type(status), "message": message}})


def upstream_error_message(payload: bytes) -> str:
    """The message inside an OpenAI-shaped (or vLLM) error body, else the body as text."""
    try:
        document = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode(errors="replace")[:2000]
    if isinstance(document, dict):
        error = document.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if document.get("message"):
            return str(document["message"])
    return payload.decode(errors="replace")[:2000]


_CONTEXT_ERROR = re.compile(r"maximum context length|max_model_len|context length|too long", re.IGNORECASE)


def is_context_length_error(message: str) -> bool:
    return bool(_CONTEXT_ERROR.search(message))
