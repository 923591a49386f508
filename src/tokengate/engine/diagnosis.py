"""Why a vLLM server died, in one line, with the fix, read from its real log."""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel

from tokengate.engine.log import parse_not_enough_kv_cache


class Reason(BaseModel):
    code: str
    message: str
    fix: str


Diagnose = Callable[[str], Reason | None]
_DIAGNOSES: list[Diagnose] = []


def _diagnosis(function: Diagnose) -> Diagnose:
    _DIAGNOSES.append(function)
    return function


def diagnose(log: str) -> Reason | None:
    """The first known cause found in the log, most specific first."""
    for check in _DIAGNOSES:
        reason = check(log)
        if reason is not None:
            return reason
    return None


@_diagnosis
def _kv_cache_too_small(log: str) -> Reason | None:
    error = parse_not_enough_kv_cache(log)
    if error is None:
        return None
    estimate = error.estimated_max_model_len
    return Reason(
        code="kv-cache-too-small",
        message=f"KV cache too small: one {error.max_model_len}-token request needs {error.needed_gib:.2f} GiB, "
        f"{error.available_gib:.2f} GiB available"
        + (f"; vLLM estimates the longest that fits at {estimate}" if estimate else ""),
        fix=f"set --max-model-len {estimate}" if estimate else "give the KV cache more memory",
    )


_UNRECOGNIZED = re.compile(r"unrecognized arguments: (?P<args>.+)")


@_diagnosis
def _unrecognized_argument(log: str) -> Reason | None:
    match = _UNRECOGNIZED.search(log)
    if not match:
        return None
    from tokengate.plan.checks import REMOVED_FLAGS  # the same table `check` uses

    args = match["args"].strip()
    flags = [token for token in args.split() if token.startswith("--")]
    for flag in flags:
        name = flag.split("=")[0][2:].replace("-", "_")
        for removed in REMOVED_FLAGS:
            if removed.flag == name:
                return Reason(
                    code="unrecognized-argument",
                    message=f"vLLM does not know {flag.split('=')[0]}: it was removed in {removed.removed_in}",
                    fix=removed.fix,
                )
    return Reason(
        code="unrecognized-argument",
        message=f"vLLM does not know: {args}",
        fix="remove it or check its spelling in `vllm serve --help`",
    )


def _pattern(code: str, pattern: str, message: str, fix: str) -> Diagnose:
    compiled = re.compile(pattern)

    def check(log: str) -> Reason | None:
        match = compiled.search(log)
        if not match:
            return None
        return Reason(code=code, message=message.format(**match.groupdict()), fix=fix)

    _DIAGNOSES.append(check)
    return check


_pattern(
    "auto-tool-choice-parser",
    r"--enable-auto-tool-choice requires --tool-call-parser",
    "--enable-auto-tool-choice was given without a --tool-call-parser",
    "add --tool-call-parser for the family (hermes for Qwen, mistral for Mistral; `tokengate check` says)",
)
_pattern(
    "free-memory-below-utilization",
    r"Free memory on device (?P<device>\S+) \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than "
    r"(?:desired GPU memory utilization|the engine's budget)",
    "only {free} of {total} GiB is free on {device} at startup, less than --gpu-memory-utilization asks for",
    "lower --gpu-memory-utilization, or stop what else uses the GPU (`nvidia-smi`)",
)
_pattern(
    "cpu-memory-below-utilization",
    r"Available memory on node \S+ \((?P<free>[\d.]+)/(?P<total>[\d.]+) GiB\) on startup is less than desired CPU",
    "only {free} of {total} GiB of host memory is free, less than --gpu-memory-utilization reserves on the CPU",
    "set --kv-cache-memory-bytes (or VLLM_CPU_KVCACHE_SPACE) explicitly",
)
_pattern(
    "out-of-memory",
    r"(?:CUDA out of memory|torch\.OutOfMemoryError|OutOfMemoryError: CUDA)",
    "the GPU ran out of memory",
    "lower --gpu-memory-utilization, --max-num-seqs or --max-num-batched-tokens, or use more GPUs",
)
_pattern(
    "unsupported-attention",
    r"Unsupported CPU attention configuration|head size \d+ is not supported|Head size \d+ is not supported",
    "the attention backend does not support this model's head size",
    "on the CPU use head_dim 32/64/80/96/112/128/160/192/224/256/512; on a GPU try another --attention-backend",
)
_pattern(
    "port-in-use",
    r"(?:Address already in use|\[Errno 98\])",
    "the port is already in use",
    "stop what listens there (`ss -ltnp`) or change the deployment's port",
)
_pattern(
    "model-not-found",
    r"(?:does not appear to have a file named config\.json|Repo id must be|LocalEntryNotFoundError|"
    r"We couldn't connect to 'https://huggingface\.co'|is not a local folder and is not a valid model identifier|"
    r"Cannot find model module|No such file or directory: '[^']*config\.json')",
    "the model was not found (a wrong path, or a hub id with no network or cache)",
    "download the model first (or fix the path); offline, point `model:` at a local directory",
)
