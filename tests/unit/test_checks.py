"""Every check rule: a config that triggers it, one that does not, and the seeds' own configurations."""

from __future__ import annotations

import pytest

from tokengate.fleet.engine_args import parse_vllm_args
from tokengate.models import find_gpu, load_model_spec
from tokengate.plan.checks import check_deployment
from tokengate.plan.findings import Finding, Severity
from tokengate.plan.planner import Deployment

QWEN3_OK = "--tool-call-parser hermes --enable-auto-tool-choice --reasoning-parser qwen3 --enable-prompt-tokens-details"


def findings(model: str, gpu: str, args: str, *, gpus: int | None = None, version: str = "0.32.0") -> list[Finding]:
    engine = parse_vllm_args(args)
    deployment = Deployment(
        model=load_model_spec(model),
        gpu=find_gpu(gpu),
        gpu_count=gpus or engine.tensor_parallel_size,
        engine=engine,
        vllm_version=version,
    )
    return check_deployment(deployment).findings


def codes(model: str, gpu: str, args: str, **kwargs: object) -> set[str]:
    return {finding.code for finding in findings(model, gpu, args, **kwargs)}  # type: ignore[arg-type]


def test_a_good_qwen3_deployment_has_no_findings() -> None:
    assert findings("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 32768") == []


def test_unreported_cached_tokens_are_pointed_out_only_where_prefix_caching_runs() -> None:
    without = QWEN3_OK.replace(" --enable-prompt-tokens-details", "") + " --max-model-len 32768"
    (finding,) = findings("Qwen/Qwen3-8B", "h100-sxm", without)
    assert (finding.code, finding.severity, finding.fix) == (
        "cached-tokens-unreported",
        Severity.INFO,
        "--enable-prompt-tokens-details",
    )
    assert findings("Qwen/Qwen3-8B", "h100-sxm", without + " --no-enable-prefix-caching") == []
    disabled = without + " --no-enable-prompt-tokens-details"
    assert [f.code for f in findings("Qwen/Qwen3-8B", "h100-sxm", disabled)] == ["cached-tokens-unreported"]


@pytest.mark.parametrize(
    ("args", "code"),
    [
        ("--enable-auto-tool-choice --reasoning-parser qwen3", "tool-parser"),
        ("--tool-call-parser mistral --enable-auto-tool-choice --reasoning-parser qwen3", "tool-parser"),
        ("--tool-call-parser hermes --reasoning-parser qwen3", "auto-tool-choice"),
        ("--tool-call-parser hermes --enable-auto-tool-choice", "reasoning-parser"),
    ],
)
def test_parser_rules(args: str, code: str) -> None:
    assert code in codes("Qwen/Qwen3-8B", "h100-sxm", args + " --max-model-len 32768")


def test_reasoning_parser_on_a_family_without_reasoning() -> None:
    args = "--tool-call-parser hermes --enable-auto-tool-choice --max-model-len 32768"
    assert "reasoning-parser" in codes("Qwen/Qwen2-7B-Instruct-AWQ", "h100-sxm", args + " --reasoning-parser qwen3")
    assert "reasoning-parser" not in codes("Qwen/Qwen2-7B-Instruct-AWQ", "h100-sxm", args)


def test_mistral_wants_its_tokenizer_mode() -> None:
    base = "--tool-call-parser mistral --enable-auto-tool-choice --max-model-len 32768"
    model = "mistralai/Mistral-Small-3.2-24B-Instruct-2506"
    assert "mistral-tokenizer" in codes(model, "h100-sxm", base)
    assert "mistral-tokenizer" not in codes(model, "h100-sxm", base + " --tokenizer-mode mistral")


def test_yarn_missing_above_native_length() -> None:
    found = findings("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 131072")
    yarn = next(f for f in found if f.code == "yarn-missing")
    assert yarn.severity is Severity.ERROR
    assert '"factor": 3.2' in yarn.fix  # 131072 / 40960
    assert yarn.fix.startswith("--hf-overrides")
    assert "yarn-missing" not in codes("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 40960")


def test_yarn_fix_uses_rope_scaling_on_old_vllm() -> None:
    found = findings("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 131072", version="0.9.2")
    assert next(f for f in found if f.code == "yarn-missing").fix.startswith("--rope-scaling")


def test_yarn_factor_and_unneeded_yarn() -> None:
    yarn = '{"rope_scaling":{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}}'
    base = f"{QWEN3_OK} --hf-overrides '{yarn}'"
    assert "yarn-factor" in codes("Qwen/Qwen3-8B", "h100-sxm", base + " --max-model-len 75000")
    assert "yarn-unneeded" in codes("Qwen/Qwen3-8B", "h100-sxm", base + " --max-model-len 16384")
    exact = codes("Qwen/Qwen3-8B", "h100-sxm", base + " --max-model-len 131072")
    assert "yarn-static" in exact
    assert "yarn-factor" not in exact


def test_max_model_len_above_the_configs_derived_limit() -> None:
    model = "meta-llama/Llama-3.1-8B-Instruct"
    base = "--tool-call-parser llama3_json --enable-auto-tool-choice"
    assert "max-model-len-limit" in codes(model, "h100-sxm", base + " --max-model-len 200000")
    assert "max-model-len-limit" not in codes(model, "h100-sxm", base + " --max-model-len 131072")


def test_tensor_parallel_rules() -> None:
    assert "tp-gpus" in codes("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " -tp 2", gpus=1)
    assert "tp-gpus" not in codes("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --tensor-parallel-size 2", gpus=2)
    # Qwen2-1.5B: 12 attention heads, 2 KV heads.
    model = "Qwen/Qwen2-1.5B-Instruct-AWQ"
    base = "--tool-call-parser hermes --enable-auto-tool-choice --max-model-len 32768"
    assert "tp-heads" in codes(model, "h100-sxm", base + " --tensor-parallel-size 8")
    assert "tp-heads" not in codes(model, "h100-sxm", base + " --tensor-parallel-size 4")
    replicated = findings(model, "h100-sxm", base + " --tensor-parallel-size 4")
    assert next(f for f in replicated if f.code == "tp-kv-heads").severity is Severity.INFO
    assert "tp-kv-heads" not in codes(model, "h100-sxm", base + " --tensor-parallel-size 2")


def test_block_fp8_moe_divisibility() -> None:
    model = "deepseek-ai/DeepSeek-V3"  # moe_intermediate_size 2048, 128-wide blocks
    base = "--tool-call-parser deepseek_v3 --enable-auto-tool-choice --max-model-len 8192"
    assert "fp8-moe-block" in codes(model, "h200", base + " --tensor-parallel-size 32", gpus=32)
    assert "fp8-moe-block" not in codes(model, "h200", base + " --tensor-parallel-size 8", gpus=8)


def test_awq_forces_the_slow_kernel_on_ampere() -> None:
    base = QWEN3_OK + " --max-model-len 32768 --tensor-parallel-size 2"
    assert "awq-slow-kernel" in codes("Qwen/Qwen3-32B-AWQ", "rtx-3090", base + " --quantization awq")
    assert "awq-slow-kernel" not in codes("Qwen/Qwen3-32B-AWQ", "rtx-3090", base + " --quantization awq_marlin")


def test_fp8_and_bf16_need_hardware() -> None:
    assert "fp8-no-hardware" in codes("Qwen/Qwen3-1.7B-FP8", "rtx-3090", QWEN3_OK + " --max-model-len 8192")
    assert "fp8-no-hardware" not in codes("Qwen/Qwen3-1.7B-FP8", "rtx-4090", QWEN3_OK + " --max-model-len 8192")
    assert "bf16-unsupported" not in codes("Qwen/Qwen3-1.7B", "rtx-3090", QWEN3_OK + " --max-model-len 8192")


def test_gb10_utilization_and_cuda_graphs() -> None:
    model = "mistralai/Devstral-Small-2-24B-Instruct-2512"
    base = "--tool-call-parser mistral --enable-auto-tool-choice --tokenizer-mode mistral --max-model-len 65536"
    risky = codes(model, "gb10", base + " --gpu-memory-utilization 0.97")
    assert {"unified-memory-utilization", "gb10-cuda-graphs"} <= risky
    safe = codes(model, "gb10", base + " --gpu-memory-utilization 0.85 --enforce-eager")
    assert not {"unified-memory-utilization", "gb10-cuda-graphs"} & safe


@pytest.mark.parametrize(
    "flag", ["--enable-reasoning", "--swap-space 16", "--disable-log-requests", "--num-scheduler-steps 8"]
)
def test_removed_flags(flag: str) -> None:
    args = QWEN3_OK + " --max-model-len 32768 "
    assert "removed-flag" in codes("Qwen/Qwen3-8B", "h100-sxm", args + flag)
    assert "removed-flag" not in codes("Qwen/Qwen3-8B", "h100-sxm", args + flag, version="0.9.2")


def test_unknown_flags_are_named() -> None:
    found = findings("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 32768 --max-num-seq 4")
    assert any(f.code == "unknown-flag" and "--max-num-seq" in f.message for f in found)
    assert "unknown-flag" not in codes("Qwen/Qwen3-8B", "h100-sxm", QWEN3_OK + " --max-model-len 32768 --port 8000")


def test_weights_that_do_not_fit() -> None:
    assert "weights-do-not-fit" in codes("Qwen/Qwen3-32B", "rtx-3090", QWEN3_OK + " --max-model-len 8192")
    assert "weights-do-not-fit" not in codes("Qwen/Qwen3-32B", "h100-sxm", QWEN3_OK + " --max-model-len 8192")


def test_kv_cache_too_small_names_the_longest_length_that_fits() -> None:
    found = findings("Qwen/Qwen3-8B", "rtx-4090", QWEN3_OK + " --max-model-len 40960 --gpu-memory-utilization 0.8")
    too_small = next(f for f in found if f.code == "kv-cache-too-small")
    assert too_small.fix.startswith("--max-model-len ")
    assert "kv-cache-too-small" not in codes("Qwen/Qwen3-8B", "rtx-4090", QWEN3_OK + " --max-model-len 8192")


def test_served_name_of_another_family() -> None:
    base = "--tool-call-parser hermes --enable-auto-tool-choice --max-model-len 32768"
    model = "Qwen/Qwen2-1.5B-Instruct-AWQ"
    assert "served-name-family" in codes(model, "rtx-3090", base + " --served-model-name qwen3-1.7b-awq")
    assert "served-name-family" not in codes(model, "rtx-3090", base + " --served-model-name qwen2-1.5b")


# The seeds' own configurations, and what a careful reader of them expects.


def test_seed_000_devstral_on_two_3090s() -> None:
    found = codes(
        "mistralai/Devstral-Small-2-24B-Instruct-2512", "rtx-3090",
        "--served-model-name devstral-small-2-24b --tool-call-parser mistral --enable-auto-tool-choice "
        "--tensor-parallel-size 2 --dtype auto --kv-cache-dtype fp8 --max-model-len 140000 "
        "--max-num-batched-tokens 16384 --max-num-seqs 4 --enable-prefix-caching --enable-chunked-prefill "
        "--gpu-memory-utilization 0.94 --host 0.0.0.0 --port 8000",
    )  # fmt: skip
    # It runs: FP8 weights on Ampere are W8A16, and mistral_common should tokenize.
    assert found == {"fp8-no-hardware", "mistral-tokenizer", "cached-tokens-unreported"}


def test_seed_001_medium_qwen3_32b_awq() -> None:
    found = codes(
        "Qwen/Qwen3-32B-AWQ", "rtx-3090",
        "--max-model-len 131072 --tensor-parallel-size 2 --gpu-memory-utilization 0.95 --quantization awq_marlin "
        "--kv_cache_dtype fp8 --dtype half --enable-auto-tool-choice --tool-call-parser hermes "
        "--reasoning-parser qwen3 --distributed-executor-backend=mp "
        """--rope_scaling '{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}' """
        "--swap-space 16 --port 5002",
    )  # fmt: skip
    # The "100% optimal" report kept --swap-space and --rope-scaling (both gone) and forced YaRN on every prompt.
    assert found == {"removed-flag", "yarn-static", "cached-tokens-unreported"}


def test_seed_002_devstral_on_gb10_first_attempt() -> None:
    found = findings(
        "mistralai/Devstral-Small-2-24B-Instruct-2512", "gb10", "--gpu-memory-utilization 0.7 --trust-remote-code"
    )
    by_code = {f.code: f for f in found}
    assert "kv-cache-too-small" in by_code  # the 393216-token default does not fit
    assert "gb10-cuda-graphs" in by_code  # the crash that came next
    assert by_code["kv-cache-too-small"].fix.startswith("--max-model-len ")


def test_seed_002_devstral_on_gb10_final() -> None:
    found = codes(
        "mistralai/Devstral-Small-2-24B-Instruct-2512", "gb10",
        "--max-model-len 65536 --gpu-memory-utilization 0.85 --enforce-eager --tool-call-parser mistral "
        "--enable-auto-tool-choice --tokenizer-mode mistral",
    )  # fmt: skip
    assert found == {"cached-tokens-unreported"}  # the only remark left: an INFO, the deployment runs as is


def test_seed_004_micro_serves_qwen2_as_qwen3() -> None:
    found = codes(
        "Qwen/Qwen2-1.5B-Instruct-AWQ", "rtx-3090",
        "--quantization awq --dtype float16 --gpu-memory-utilization 0.3 --max-model-len 128000 "
        "--kv-cache-dtype fp8 --port 8000 --served-model-name qwen3-1.7b-awq "
        "--chat-template /chat-templates/qwen.jinja --enable-reasoning --reasoning-parser qwen3 "
        "--enable-auto-tool-choice",
    )  # fmt: skip
    assert {
        "awq-slow-kernel", "yarn-missing", "removed-flag", "reasoning-parser", "served-name-family", "tool-parser",
    } <= found  # fmt: skip


def test_seed_004_mini_and_medium() -> None:
    mini = codes(
        "Qwen/Qwen2-7B-Instruct-AWQ", "rtx-3090",
        "--quantization awq --gpu-memory-utilization 0.9 --max-model-len 128000 --kv-cache-dtype fp8 "
        """--rope_scaling '{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}' """
        "--enable-reasoning --reasoning-parser qwen3 --served-model-name qwen3-8b-awq",
    )  # fmt: skip
    assert {"awq-slow-kernel", "yarn-factor", "removed-flag", "reasoning-parser", "served-name-family"} <= mini
    medium = codes(
        "Qwen/Qwen3-32B-AWQ", "rtx-3090",
        "--max-model-len=75000 --quantization=awq_marlin --tensor-parallel-size=2 --kv-cache-dtype=fp8 "
        """--rope-scaling='{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}' """
        "--enable-reasoning --reasoning-parser qwen3 --enable-auto-tool-choice --tool-call-parser hermes",
    )  # fmt: skip
    assert medium == {"yarn-factor", "removed-flag", "cached-tokens-unreported"}


def test_gptq_and_bf16_on_older_hardware() -> None:
    turing = find_gpu("rtx-3090").model_copy(update={"name": "t4", "compute_capability": "7.5", "fp8": False})
    engine = parse_vllm_args(QWEN3_OK + " --max-model-len 8192")
    bf16 = check_deployment(Deployment(model=load_model_spec("Qwen/Qwen3-1.7B"), gpu=turing, engine=engine))
    assert "bf16-unsupported" in {f.code for f in bf16.findings}
    half = engine.model_copy(update={"dtype": "half"})
    fixed = check_deployment(Deployment(model=load_model_spec("Qwen/Qwen3-1.7B"), gpu=turing, engine=half))
    assert "bf16-unsupported" not in {f.code for f in fixed.findings}
    base = QWEN3_OK + " --max-model-len 8192"
    assert "gptq-slow-kernel" in codes("Qwen/Qwen3-8B", "l40s", base + " --quantization gptq")
    assert "gptq-slow-kernel" not in codes("Qwen/Qwen3-8B", "l40s", base + " --quantization gptq_marlin")
