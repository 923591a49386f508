"""Fix texts: the exact vLLM flags to add, and where they go in the fleet file when the target came from one."""

from __future__ import annotations

from tokengate.validate.target import Target


def start_vllm_with(target: Target, *flags: str, note: str = "") -> str:
    """ "start vLLM with --flag …", plus the fleet file's spelling when the target is a fleet deployment."""
    text = "start vLLM with " + " ".join(flags) + (f" {note}" if note else "")
    if target.deployment:
        entries = ", ".join(_yaml_entry(flag) for flag in flags)
        text += f" (fleet file: engine_args of {target.deployment}: {entries})"
    return text


def _yaml_entry(flag: str) -> str:
    name, _, value = flag.removeprefix("--").partition(" ")
    return f"{name}: {value or 'true'}"


def tool_parser_flag(target: Target) -> str:
    engine = target.engine
    parser = (engine.tool_call_parser if engine else None) or target.recommended.tool_call_parser
    return f"--tool-call-parser {parser or '<the parser for your model, e.g. hermes for Qwen3>'}"


def reasoning_parser_flag(target: Target) -> str:
    engine = target.engine
    parser = (engine.reasoning_parser if engine else None) or target.recommended.reasoning_parser
    return f"--reasoning-parser {parser or '<the parser for your model, e.g. qwen3>'}"
