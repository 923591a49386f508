"""Rules over a deployment: each returns findings that say what is wrong and the exact fix.

Every rule is a small function registered with `@rule`; `check_deployment`
runs them all over a `Deployment` and its `Plan`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib import resources

from tokengate.models import family_in_name
from tokengate.plan.findings import Finding, Severity
from tokengate.plan.planner import Deployment, Plan, derived_max_model_len, make_plan
from tokengate.units import human_bytes
from tokengate.versions import version_tuple

GIB = 1024**3
UNIFIED_MEMORY_OS_RESERVE = 8 * GIB  # what the OS and desktop of a GB10 typically hold at boot (estimate)
FP8_MOE_BLOCK = 128

# family -> (tool parser, reasoning parser or None)
PARSERS: dict[str, tuple[str, str | None]] = {
    "qwen3": ("hermes", "qwen3"),
    "qwen3-next": ("hermes", None),
    "qwen3-coder": ("qwen3_coder", None),
    "qwen2": ("hermes", None),
    "mistral": ("mistral", None),
    "llama": ("llama3_json", None),
    "gpt-oss": ("openai", "openai_gptoss"),
    "deepseek": ("deepseek_v3", None),
}


@dataclass(frozen=True)
class RemovedFlag:
    flag: str
    removed_in: str
    fix: str


REMOVED_FLAGS = (
    RemovedFlag("enable_reasoning", "0.10.0", "remove it; --reasoning-parser alone turns reasoning on"),
    RemovedFlag("num_scheduler_steps", "0.10.0", "remove it; the V1 engine schedules every step"),
    RemovedFlag("use_v2_block_manager", "0.7.0", "remove it; there is one block manager"),
    RemovedFlag("preemption_mode", "0.10.0", "remove it; V1 always preempts by recomputation"),
    RemovedFlag("swap_space", "0.12.0", "remove it; V1 does not swap KV blocks to CPU memory"),
    RemovedFlag("rope_scaling", "0.11.0", "use --hf-overrides '{\"rope_scaling\": {...}}' with the same object"),
    RemovedFlag("rope_theta", "0.11.0", "use --hf-overrides '{\"rope_theta\": ...}'"),
    RemovedFlag("disable_log_requests", "0.12.0", "remove it; requests are not logged unless --enable-log-requests"),
    RemovedFlag("guided_decoding_backend", "0.11.0", 'use --structured-outputs-config \'{"backend": "..."}\''),
    RemovedFlag("max_seq_len_to_capture", "0.11.0", "remove it; CUDA graph sizes come from --compilation-config"),
)

Rule = Callable[[Deployment, Plan], list[Finding]]
RULES: list[Rule] = []


def rule(function: Rule) -> Rule:
    RULES.append(function)
    return function


def check_deployment(deployment: Deployment) -> Plan:
    """The plan with every rule's findings, errors first."""
    plan = make_plan(deployment)
    findings = [finding for check in RULES for finding in check(deployment, plan)]
    order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
    return plan.model_copy(update={"findings": sorted(findings, key=lambda f: order[f.severity])})


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@rule
def tool_and_reasoning_parsers(deployment: Deployment, plan: Plan) -> list[Finding]:
    family = deployment.model.family
    engine = deployment.engine
    if family not in PARSERS:
        return []
    tool, reasoning = PARSERS[family]
    findings = []
    if engine.tool_call_parser != tool:
        wrong = f"--tool-call-parser {engine.tool_call_parser}" if engine.tool_call_parser else "no --tool-call-parser"
        findings.append(
            Finding(
                code="tool-parser",
                severity=Severity.ERROR,
                message=f"{family} models need the {tool} tool parser; {wrong} leaves tool calls as plain text",
                fix=f"--tool-call-parser {tool} --enable-auto-tool-choice",
            )
        )
    if not engine.enable_auto_tool_choice:
        findings.append(
            Finding(
                code="auto-tool-choice",
                severity=Severity.ERROR,
                message='tool_choice "auto" (what agents send) is rejected without --enable-auto-tool-choice',
                fix="--enable-auto-tool-choice",
            )
        )
    findings += _reasoning_parser_findings(family, reasoning, engine.reasoning_parser)
    if family == "mistral" and engine.tokenizer_mode != "mistral":
        findings.append(
            Finding(
                code="mistral-tokenizer",
                severity=Severity.WARNING,
                message="Mistral models are tokenized and templated by mistral_common, not the HF tokenizer",
                fix="--tokenizer-mode mistral",
            )
        )
    return findings


@rule
def cached_tokens_reported(deployment: Deployment, plan: Plan) -> list[Finding]:
    """Prefix caching saves work the client never hears about unless vLLM puts cached tokens in `usage`."""
    engine = deployment.engine
    if engine.enable_prefix_caching is False or engine.passthrough.get("enable_prompt_tokens_details") is True:
        return []
    return [
        Finding(
            code="cached-tokens-unreported",
            severity=Severity.INFO,
            message="vLLM leaves cached prompt tokens out of `usage` without --enable-prompt-tokens-details: the "
            "gateway's ledger, Anthropic's cache_read_input_tokens and bench's per-request cached ratio stay empty",
            fix="--enable-prompt-tokens-details",
        )
    ]


def _reasoning_parser_findings(family: str, expected: str | None, given: str | None) -> list[Finding]:
    if expected and given != expected:
        return [
            Finding(
                code="reasoning-parser",
                severity=Severity.WARNING,
                message=f"{family} models think in <think> blocks; without --reasoning-parser {expected} "
                "the reasoning lands in the answer's content",
                fix=f"--reasoning-parser {expected}",
            )
        ]
    if given and not expected:
        return [
            Finding(
                code="reasoning-parser",
                severity=Severity.WARNING,
                message=f"{family} models do not write reasoning blocks; --reasoning-parser {given} only "
                "risks moving real content into the reasoning field",
                fix=f"remove --reasoning-parser {given}",
            )
        ]
    return []


@rule
def yarn_rope_scaling(deployment: Deployment, plan: Plan) -> list[Finding]:
    engine = deployment.engine
    model = deployment.model
    rope = engine.rope_scaling or (engine.hf_overrides or {}).get("rope_scaling")
    native = model.native_context if model.rope_scaling else model.max_position_embeddings
    target = plan.max_model_len
    if not isinstance(rope, dict) or rope.get("rope_type", rope.get("type")) != "yarn":
        if target > native and not model.rope_scaling:
            factor = _yarn_factor(target, native)
            return [
                Finding(
                    code="yarn-missing",
                    severity=Severity.ERROR,
                    message=f"max_model_len {target} is above the native {native} tokens and no rope scaling is set",
                    fix=_yarn_fix(factor, native, deployment.vllm_version),
                )
            ]
        return []
    original = int(rope.get("original_max_position_embeddings") or native)
    factor = float(rope.get("factor") or 1)
    if target <= original:
        return [
            Finding(
                code="yarn-unneeded",
                severity=Severity.WARNING,
                message=f"YaRN x{factor:g} is static in vLLM and lowers quality on short prompts, "
                f"yet max_model_len {target} fits in the native {original} tokens",
                fix="remove the rope_scaling override",
            )
        ]
    needed = _yarn_factor(target, original)
    if abs(factor - needed) <= 1e-9:
        return [
            Finding(
                code="yarn-static",
                severity=Severity.WARNING,
                message=f"vLLM applies YaRN x{factor:g} statically, to every prompt, short ones included; "
                f"it only pays off when prompts routinely exceed the native {original} tokens",
                fix=f"keep it only for long-context traffic; otherwise drop it and use --max-model-len {original}",
            )
        ]
    return [
        Finding(
            code="yarn-factor",
            severity=Severity.WARNING,
            message=f"YaRN factor {factor:g} does not match max_model_len / original = {target}/{original}",
            fix=_yarn_fix(needed, original, deployment.vllm_version),
        )
    ]


def _yarn_factor(target: int, original: int) -> float:
    return round(target / original, 4)


def _yarn_fix(factor: float, original: int, vllm_version: str) -> str:
    scaling = {"rope_type": "yarn", "factor": factor, "original_max_position_embeddings": original}
    if version_tuple(vllm_version) < (0, 11, 0):
        return f"--rope-scaling '{json.dumps(scaling)}'"
    return f"--hf-overrides '{json.dumps({'rope_scaling': scaling})}'"


@rule
def max_model_len_limit(deployment: Deployment, plan: Plan) -> list[Finding]:
    engine = deployment.engine
    model = deployment.model
    if not engine.max_model_len:
        return []
    limit = derived_max_model_len(model, engine.model_copy(update={"max_model_len": None}))
    if engine.max_model_len <= limit or model.rope_scaling is None:
        return []  # without scaling in the config, yarn_rope_scaling says what to do
    return [
        Finding(
            code="max-model-len-limit",
            severity=Severity.ERROR,
            message=f"max_model_len {engine.max_model_len} is above the {limit} tokens the model's config derives; "
            "vLLM refuses to start",
            fix=f"--max-model-len {limit}",
        )
    ]


@rule
def tensor_parallel_layout(deployment: Deployment, plan: Plan) -> list[Finding]:
    tp = deployment.engine.tensor_parallel_size
    pp = deployment.engine.pipeline_parallel_size
    model = deployment.model
    findings = []
    if tp * pp > deployment.gpu_count:
        findings.append(
            Finding(
                code="tp-gpus",
                severity=Severity.ERROR,
                message=f"tensor x pipeline parallel = {tp * pp} GPUs, but the deployment has {deployment.gpu_count}",
                fix=f"--tensor-parallel-size {deployment.gpu_count} or give it {tp * pp} GPUs",
            )
        )
    if model.num_attention_heads % tp:
        valid = [n for n in (1, 2, 4, 8) if model.num_attention_heads % n == 0 and n <= deployment.gpu_count]
        findings.append(
            Finding(
                code="tp-heads",
                severity=Severity.ERROR,
                message=f"{model.num_attention_heads} attention heads do not divide by tensor_parallel_size {tp}",
                fix=f"--tensor-parallel-size {max(valid or [1])}",
            )
        )
    kv = model.num_kv_heads
    if not model.mla and tp > kv:
        severity = Severity.ERROR if tp % kv else Severity.INFO
        findings.append(
            Finding(
                code="tp-kv-heads",
                severity=severity,
                message=f"{kv} KV heads over {tp} ranks: each rank keeps a full copy of a KV head, "
                "so KV memory per token does not shrink with TP",
                fix=f"--tensor-parallel-size {kv}" if tp % kv else "none needed; consider pipeline parallel instead",
            )
        )
    return findings


@rule
def fp8_moe_block_divisibility(deployment: Deployment, plan: Plan) -> list[Finding]:
    model = deployment.model
    quant = model.quantization
    tp = deployment.engine.tensor_parallel_size
    if not (model.moe and quant and quant.weight_block_size):
        return []
    block = quant.weight_block_size[0] if quant.weight_block_size else FP8_MOE_BLOCK
    shard = model.moe.moe_intermediate_size / tp
    if shard % block == 0:
        return []
    good = [n for n in (1, 2, 4, 8) if (model.moe.moe_intermediate_size / n) % block == 0]
    return [
        Finding(
            code="fp8-moe-block",
            severity=Severity.ERROR,
            message=f"block-FP8 experts: moe_intermediate_size {model.moe.moe_intermediate_size} / TP {tp} = {shard:g} "
            f"is not a multiple of the {block}-wide quantization block; weight loading fails",
            fix=f"--tensor-parallel-size {max(good or [1])}",
        )
    ]


@rule
def quantization_kernels(deployment: Deployment, plan: Plan) -> list[Finding]:
    engine = deployment.engine
    capability = deployment.gpu.compute_capability_number
    findings = []
    if capability is None:
        return findings
    for slow, fast in (("awq", "awq_marlin"), ("gptq", "gptq_marlin")):
        if engine.quantization == slow and capability >= 8.0:
            findings.append(
                Finding(
                    code=f"{slow}-slow-kernel",
                    severity=Severity.WARNING,
                    message=f"--quantization {slow} forces the slow {slow} kernel; on compute capability "
                    f"{capability:g} vLLM would pick {fast}",
                    fix=f"--quantization {fast} (or leave --quantization out)",
                )
            )
    model_quant = deployment.model.quantization
    uses_fp8 = (model_quant and model_quant.method == "fp8") or engine.quantization == "fp8"
    if uses_fp8 and capability < 8.9:
        findings.append(
            Finding(
                code="fp8-no-hardware",
                severity=Severity.WARNING,
                message=f"compute capability {capability:g} has no FP8 tensor cores: FP8 weights run as W8A16 "
                "through Marlin (memory savings, no FP8 compute speedup)",
                fix="expected on this GPU; for speed prefer an AWQ/GPTQ 4-bit checkpoint",
            )
        )
    wants_bf16 = engine.dtype in {"bfloat16"} or (engine.dtype == "auto" and deployment.model.dtype == "bfloat16")
    if wants_bf16 and capability < 8.0:
        findings.append(
            Finding(
                code="bf16-unsupported",
                severity=Severity.ERROR,
                message=f"compute capability {capability:g} has no bfloat16",
                fix="--dtype half",
            )
        )
    return findings


@rule
def unified_memory_gpu(deployment: Deployment, plan: Plan) -> list[Finding]:
    gpu = deployment.gpu
    engine = deployment.engine
    if not gpu.unified_memory or not gpu.memory_bytes:
        return []
    findings = []
    free_at_boot = gpu.memory_bytes - UNIFIED_MEMORY_OS_RESERVE
    requested = gpu.memory_bytes * engine.gpu_memory_utilization
    if engine.kv_cache_memory_bytes is None and requested > free_at_boot:
        safe = int(free_at_boot / gpu.memory_bytes * 100) / 100
        findings.append(
            Finding(
                code="unified-memory-utilization",
                severity=Severity.ERROR,
                message=f"{gpu.display_name} shares memory with the OS: {engine.gpu_memory_utilization} x "
                f"{gpu.memory_bytes / GIB:.1f} GiB is more than the ~{free_at_boot / GIB:.0f} GiB free at boot",
                fix=f"--gpu-memory-utilization {safe}",
            )
        )
    if gpu.name == "gb10" and not engine.enforce_eager:
        findings.append(
            Finding(
                code="gb10-cuda-graphs",
                severity=Severity.WARNING,
                message="CUDA graph capture crashes on GB10 (compute capability 12.1) with current PyTorch builds",
                fix="--enforce-eager",
            )
        )
    return findings


@rule
def removed_flags(deployment: Deployment, plan: Plan) -> list[Finding]:
    engine = deployment.engine
    target = version_tuple(deployment.vllm_version)
    return [
        Finding(
            code="removed-flag",
            severity=Severity.ERROR,
            message=f"{_flag(flag.flag)} was removed in vLLM {flag.removed_in}; "
            f"vLLM {deployment.vllm_version} refuses to start with it",
            fix=flag.fix,
        )
        for flag in REMOVED_FLAGS
        if engine.given(flag.flag) and target >= version_tuple(flag.removed_in)
    ]


@rule
def unknown_flags(deployment: Deployment, plan: Plan) -> list[Finding]:
    known = _known_flags(deployment.vllm_version)
    if known is None:
        return []
    return [
        Finding(
            code="unknown-flag",
            severity=Severity.ERROR,
            message=f"vLLM {deployment.vllm_version} has no {_flag(name)}",
            fix=f"remove {_flag(name)} or check its spelling in `vllm serve --help`",
        )
        for name in deployment.engine.passthrough
        if _flag(name) not in known and name not in {flag.flag for flag in REMOVED_FLAGS}
    ]


@cache
def _known_flags(vllm_version: str) -> frozenset[str] | None:
    data = resources.files("tokengate.plan") / "data" / f"vllm-{vllm_version}-flags.json"
    if not data.is_file():
        return None
    return frozenset(json.loads(data.read_text()))


@rule
def memory_fit(deployment: Deployment, plan: Plan) -> list[Finding]:
    engine = deployment.engine
    budget = plan.budget
    if budget.source == "gpu_memory_utilization":
        requested = budget.total_bytes * engine.gpu_memory_utilization
        if plan.weight_bytes_per_gpu > requested:
            return [
                Finding(
                    code="weights-do-not-fit",
                    severity=Severity.ERROR,
                    message=f"weights take {human_bytes(plan.weight_bytes_per_gpu)} per GPU, more than the "
                    f"{human_bytes(int(requested))} that gpu_memory_utilization {engine.gpu_memory_utilization} allows",
                    fix="use more GPUs (--tensor-parallel-size), a quantized checkpoint, or a larger GPU",
                )
            ]
    if plan.fits_one_request:
        return []
    fit = plan.max_model_len_fit
    fix = f"--max-model-len {fit}" if fit > 0 else "free memory: raise --gpu-memory-utilization or use more GPUs"
    return [
        Finding(
            code="kv-cache-too-small",
            severity=Severity.ERROR,
            message=f"one request at max_model_len {plan.max_model_len} needs {human_bytes(plan.kv_bytes_needed)} of "
            f"KV cache; {human_bytes(max(plan.available_kv_bytes, 0))} is available"
            + (f"; the longest that fits is {fit}" if fit > 0 else ""),
            fix=fix + " (or raise --gpu-memory-utilization, or --kv-cache-dtype fp8)",
        )
    ]


@rule
def served_name_family(deployment: Deployment, plan: Plan) -> list[Finding]:
    family = deployment.model.family.split("-")[0]
    findings = []
    for name in deployment.engine.served_model_name:
        claimed = family_in_name(name)
        if claimed and claimed != family:
            findings.append(
                Finding(
                    code="served-name-family",
                    severity=Severity.WARNING,
                    message=f"served name {name!r} says {claimed}, but {deployment.model.id} is a "
                    f"{deployment.model.family} model: clients and the gateway will pick the wrong parsers and repairs",
                    fix=f"--served-model-name {deployment.model.id.split('/')[-1].lower()}",
                )
            )
    return findings
