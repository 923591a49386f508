"""Keeping consecutive agent turns byte-identical at the front, so the engine's prefix cache hits.

vLLM caches by exact token prefix. A coding agent resends its whole context each turn, but some clients put a
per-request value at the very top: Claude Code's first system line is
`x-anthropic-billing-header: cc_version=…; cc_entrypoint=…; cch=<nonce>;`, and `cch` changes every request.
With that line in place no block of the prompt is ever reused. These functions remove such lines, and write
tool definitions in one canonical form (sorted keys), so the same tools always render to the same bytes.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from tokengate.gateway.anthropic import Body


@dataclass(frozen=True)
class VolatileLine:
    kind: str
    pattern: re.Pattern[str]


VOLATILE_LINES = (
    VolatileLine("billing_header", re.compile(r"^x-anthropic-billing-header:[^\n]*(\n|$)", re.MULTILINE)),
)


def preserve_prefix(request: Body) -> tuple[Body, Counter[str]]:
    """The Messages request with volatile system lines removed and tools in canonical form; counts by kind."""
    removed: Counter[str] = Counter()
    repaired = dict(request)
    system = request.get("system")
    if isinstance(system, str):
        repaired["system"] = _strip(system, removed)
    elif isinstance(system, list):
        blocks = []
        for block in system:
            if not (isinstance(block, dict) and isinstance(block.get("text"), str)):
                blocks.append(block)
                continue
            text = _strip(block["text"], removed)
            if text or not block["text"]:  # drop a block that held nothing but volatile lines
                blocks.append({**block, "text": text})
        repaired["system"] = blocks
    if isinstance(request.get("tools"), list):
        repaired["tools"] = [canonical(tool) for tool in request["tools"]]
    return repaired, removed


def _strip(text: str, removed: Counter[str]) -> str:
    for line in VOLATILE_LINES:
        text, count = line.pattern.subn("", text)
        if count:
            removed[line.kind] += count
    return text


def canonical(value: Any) -> Any:
    """Objects with their keys sorted, all the way down: the same tools give the same bytes whatever the order
    the client happened to write them in."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value
