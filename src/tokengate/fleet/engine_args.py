"""vLLM engine arguments: typed where Tokengate reasons about them, passed through otherwise."""

from __future__ import annotations

import json
import shlex
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tokengate.errors import InvalidInputError

# Flags that take no value; `--no-<flag>` turns them off.
BOOLEAN_FLAGS = frozenset({
    "enable_auto_tool_choice", "enable_prefix_caching", "enable_chunked_prefill", "enforce_eager",
    "trust_remote_code", "enable_reasoning", "disable_log_requests", "enable_log_requests",
    "disable_log_stats", "use_v2_block_manager", "language_model_only", "enable_expert_parallel",
    "enable_prompt_tokens_details",
})  # fmt: skip
# vLLM's single-dash short forms.
SHORT_FLAGS = {"-tp": "--tensor-parallel-size", "-pp": "--pipeline-parallel-size", "-dp": "--data-parallel-size",
               "-q": "--quantization"}  # fmt: skip
# Flags whose value is JSON.
JSON_FLAGS = frozenset({"rope_scaling", "hf_overrides", "structured_outputs_config", "compilation_config"})


class EngineArgs(BaseModel):
    """The `vllm serve` arguments of one deployment. Unknown flags land in `passthrough`, untouched."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    served_model_name: list[str] = Field(default_factory=list)
    tensor_parallel_size: int = Field(1, ge=1)
    pipeline_parallel_size: int = Field(1, ge=1)
    max_model_len: int | None = Field(None, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0, le=1)
    kv_cache_dtype: str = "auto"
    kv_cache_memory_bytes: int | None = Field(None, ge=0)
    block_size: int | None = Field(None, ge=1)
    max_num_seqs: int | None = Field(None, ge=1)
    max_num_batched_tokens: int | None = Field(None, ge=1)
    enforce_eager: bool = False
    quantization: str | None = None
    dtype: str = "auto"
    tokenizer_mode: str | None = None
    tool_call_parser: str | None = None
    reasoning_parser: str | None = None
    enable_auto_tool_choice: bool = False
    enable_prefix_caching: bool | None = None
    enable_chunked_prefill: bool | None = None
    rope_scaling: dict[str, Any] | None = None
    hf_overrides: dict[str, Any] | None = None
    swap_space: float | None = None
    enable_reasoning: bool | None = None
    disable_log_requests: bool | None = None
    num_scheduler_steps: int | None = None
    passthrough: dict[str, str | bool] = Field(default_factory=dict)

    def given(self, name: str) -> bool:
        """Whether the user set this flag (typed or passthrough), as opposed to a default."""
        return name in self.model_fields_set or name in self.passthrough


def parse_vllm_args(text: str) -> EngineArgs:
    """Parse `vllm serve MODEL --flag value ...` (or just the flags) into `EngineArgs`."""
    try:
        tokens = shlex.split(text)
    except ValueError as exc:
        raise InvalidInputError(f"vllm args: {exc}; check the quoting") from None
    if tokens[:2] == ["vllm", "serve"]:
        tokens = tokens[2:]
    values: dict[str, Any] = {}
    passthrough: dict[str, str | bool] = {}
    index = 0
    while index < len(tokens):
        token = SHORT_FLAGS.get(tokens[index], tokens[index])
        index += 1
        if not token.startswith("--"):
            if "model" in values:
                raise InvalidInputError(f"vllm args: unexpected value {token!r}; flags start with --")
            values["model"] = token
            continue
        name, _, inline = token[2:].partition("=")
        name = name.replace("-", "_")
        value, index = _flag_value(name, inline, tokens, index)
        _store(name, value, values, passthrough)
    try:
        return EngineArgs(**values, passthrough=passthrough)
    except ValidationError as exc:
        problems = [f"--{'.'.join(map(str, e['loc'])).replace('_', '-')}: {e['msg']}" for e in exc.errors()]
        raise InvalidInputError("vllm args: " + "; ".join(problems)) from None


def _flag_value(name: str, inline: str, tokens: list[str], index: int) -> tuple[str | bool, int]:
    if inline:
        return inline, index
    bare = name.removeprefix("no_")
    if bare in BOOLEAN_FLAGS:
        return name == bare, index
    if name == "served_model_name":  # takes one or more names, as in vLLM
        end = index
        while end < len(tokens) and not tokens[end].startswith("--"):
            end += 1
        return " ".join(tokens[index:end]), end
    if index < len(tokens) and not tokens[index].startswith("--"):
        return tokens[index], index + 1
    return True, index


def _store(name: str, value: str | bool, values: dict[str, Any], passthrough: dict[str, str | bool]) -> None:
    name = name.removeprefix("no_") if name.removeprefix("no_") in BOOLEAN_FLAGS else name
    if name == "served_model_name":
        values.setdefault(name, []).extend(str(value).split())
    elif name in JSON_FLAGS and isinstance(value, str):
        try:
            values[name] = json.loads(value)
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"vllm args: --{name.replace('_', '-')} is not valid JSON: {exc}") from None
        if name not in EngineArgs.model_fields:
            passthrough[name] = value
            values.pop(name)
    elif name in EngineArgs.model_fields and name != "passthrough":
        values[name] = value
    else:
        passthrough[name] = value


def argv_flags(args: EngineArgs) -> list[str]:
    """The flags part of `vllm serve` for these args, in a stable order (model not included)."""
    flags: list[str] = []
    for name in EngineArgs.model_fields:
        if name in {"model", "passthrough"} or name not in args.model_fields_set:
            continue
        flags += _render_flag(name, getattr(args, name))
    for name, value in args.passthrough.items():
        flags += _render_flag(name, value)
    return flags


def _render_flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag] if value else ["--no-" + name.replace("_", "-")]
    if isinstance(value, list):
        return [flag, *map(str, value)] if value else []
    if isinstance(value, dict):
        return [flag, json.dumps(value, separators=(",", ":"))]
    return [flag, str(value)]
