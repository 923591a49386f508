"""`plan`: from a model, a GPU and engine args, the numbers vLLM will compute, and what is wrong."""

from __future__ import annotations

from pydantic import BaseModel

from tokengate.fleet.engine_args import EngineArgs
from tokengate.models.gpu import GpuSpec
from tokengate.models.spec import ModelSpec
from tokengate.models.weights import weight_bytes
from tokengate.plan.budget import BudgetInput, MemoryBudget, memory_budget
from tokengate.plan.findings import Finding
from tokengate.plan.kv_cache import CPU_BLOCK_SIZE, CUDA_BLOCK_SIZE, KvSettings, kv_capacity, kv_layout

NEWEST_KNOWN_VLLM = "0.32.0"
GPU_DEFAULT_MAX_NUM_SEQS = 256
GPU_DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
CPU_DEFAULT_MAX_NUM_BATCHED_TOKENS = 4096


class Deployment(BaseModel):
    """What `plan` and `check` look at: one model served on `gpu_count` GPUs of one kind."""

    model: ModelSpec
    gpu: GpuSpec
    gpu_count: int = 1
    engine: EngineArgs = EngineArgs()
    vllm_version: str = NEWEST_KNOWN_VLLM


class Plan(BaseModel):
    deployment: str | None = None  # the fleet deployment's name, when planned from a fleet file
    model_id: str
    family: str
    gpu: str
    gpu_count: int
    tensor_parallel_size: int
    max_model_len: int
    block_size: int
    kv_cache_dtype: str
    weight_bytes: int
    weight_bytes_per_gpu: int
    kv_bytes_per_token: int
    available_kv_bytes: int
    kv_cache_tokens: int
    max_concurrency: float
    kv_bytes_needed: int
    fits_one_request: bool
    max_model_len_fit: int
    budget: MemoryBudget
    approximate: bool
    findings: list[Finding] = []


def derived_max_model_len(model: ModelSpec, engine: EngineArgs) -> int:
    """vLLM's default max_model_len: the config's length, stretched by a YaRN factor given on the command line."""
    if engine.max_model_len:
        return engine.max_model_len
    rope = engine.rope_scaling or (engine.hf_overrides or {}).get("rope_scaling")
    if isinstance(rope, dict) and rope.get("factor") and rope.get("original_max_position_embeddings"):
        return int(rope["original_max_position_embeddings"] * float(rope["factor"]))
    return model.max_position_embeddings


def block_size_for(deployment: Deployment) -> int:
    if deployment.engine.block_size:
        return deployment.engine.block_size
    return CPU_BLOCK_SIZE if deployment.gpu.is_cpu else CUDA_BLOCK_SIZE


def kv_settings_for(deployment: Deployment) -> KvSettings:
    engine = deployment.engine
    default_batched = (
        CPU_DEFAULT_MAX_NUM_BATCHED_TOKENS if deployment.gpu.is_cpu else GPU_DEFAULT_MAX_NUM_BATCHED_TOKENS
    )
    return KvSettings(
        block_size=block_size_for(deployment),
        tensor_parallel_size=engine.tensor_parallel_size,
        kv_cache_dtype=engine.kv_cache_dtype,
        max_num_batched_tokens=engine.max_num_batched_tokens or default_batched,
    )


def budget_for(deployment: Deployment) -> MemoryBudget:
    engine = deployment.engine
    settings = kv_settings_for(deployment)
    return memory_budget(
        BudgetInput(
            model=deployment.model,
            gpu=deployment.gpu,
            weight_bytes=weight_bytes(deployment.model),
            tensor_parallel_size=engine.tensor_parallel_size,
            gpu_memory_utilization=engine.gpu_memory_utilization,
            max_num_batched_tokens=settings.max_num_batched_tokens,
            max_num_seqs=engine.max_num_seqs or GPU_DEFAULT_MAX_NUM_SEQS,
            enforce_eager=engine.enforce_eager,
            kv_cache_memory_bytes=engine.kv_cache_memory_bytes,
        )
    )


def make_plan(deployment: Deployment) -> Plan:
    """The numbers only; `check_deployment` adds the findings."""
    model = deployment.model
    engine = deployment.engine
    settings = kv_settings_for(deployment)
    max_model_len = derived_max_model_len(model, engine)
    budget = budget_for(deployment)
    layout = kv_layout(model, max_model_len, settings)
    capacity = kv_capacity(
        model, budget.available_kv_bytes, max_model_len, settings, longest_to_try=model.max_position_embeddings
    )
    weights = weight_bytes(model)
    return Plan(
        model_id=model.id,
        family=model.family,
        gpu=deployment.gpu.name,
        gpu_count=deployment.gpu_count,
        tensor_parallel_size=engine.tensor_parallel_size,
        max_model_len=max_model_len,
        block_size=settings.block_size,
        kv_cache_dtype=engine.kv_cache_dtype,
        weight_bytes=weights,
        weight_bytes_per_gpu=weights // engine.tensor_parallel_size,
        kv_bytes_per_token=layout.kv_bytes_per_token,
        available_kv_bytes=budget.available_kv_bytes,
        kv_cache_tokens=capacity.kv_cache_tokens,
        max_concurrency=capacity.max_concurrency,
        kv_bytes_needed=capacity.kv_bytes_needed,
        fits_one_request=capacity.fits_one_request,
        max_model_len_fit=capacity.max_model_len_fit,
        budget=budget,
        approximate=layout.approximate or budget.source != "kv_cache_memory_bytes",
    )
