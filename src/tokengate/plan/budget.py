"""The memory budget that leaves vLLM its KV-cache bytes, term by term.

On a GPU, vLLM 0.32 gives the KV cache what remains of `total × gpu_memory_utilization`
after the weights, the activation peak of a profiling forward pass at
`max_num_batched_tokens`, memory allocated outside torch (CUDA context, NCCL
buffers) and CUDA graphs. Only the weights are exact; the other terms are
estimates, named as such. `--kv-cache-memory-bytes` replaces the whole budget,
as it does in vLLM; on the CPU backend it (or VLLM_CPU_KVCACHE_SPACE) is required.
"""

from __future__ import annotations

from pydantic import BaseModel

from tokengate.models.gpu import GpuSpec
from tokengate.models.spec import ModelSpec

GIB = 1024**3
SAMPLER_BYTES_PER_LOGIT = 8  # float32 logits and their softmax, per sequence in the batch


class BudgetTerm(BaseModel):
    name: str
    bytes: int
    exact: bool
    note: str = ""


class MemoryBudget(BaseModel):
    source: str  # "gpu_memory_utilization" or "kv_cache_memory_bytes"
    total_bytes: int
    gpu_memory_utilization: float
    terms: list[BudgetTerm]
    available_kv_bytes: int


class BudgetInput(BaseModel):
    model: ModelSpec
    gpu: GpuSpec
    weight_bytes: int
    tensor_parallel_size: int = 1
    gpu_memory_utilization: float = 0.9
    max_num_batched_tokens: int = 8192
    max_num_seqs: int = 256
    enforce_eager: bool = False
    kv_cache_memory_bytes: int | None = None


def memory_budget(given: BudgetInput) -> MemoryBudget:
    total = given.gpu.memory_bytes or 0
    if given.kv_cache_memory_bytes is not None:
        return MemoryBudget(
            source="kv_cache_memory_bytes",
            total_bytes=total,
            gpu_memory_utilization=given.gpu_memory_utilization,
            terms=[BudgetTerm(name="kv_cache_memory_bytes", bytes=given.kv_cache_memory_bytes, exact=True,
                              note="set explicitly; vLLM skips its own budget")],
            available_kv_bytes=given.kv_cache_memory_bytes,
        )  # fmt: skip
    requested = int(total * given.gpu_memory_utilization)
    terms = [
        BudgetTerm(name="requested", bytes=requested, exact=True, note="total x gpu_memory_utilization"),
        BudgetTerm(name="weights", bytes=-(given.weight_bytes // given.tensor_parallel_size), exact=True,
                   note=f"weights / tensor_parallel_size ({given.tensor_parallel_size})"),
        BudgetTerm(name="activation_peak", bytes=-activation_peak_bytes(given), exact=False,
                   note=f"profiling forward pass at max_num_batched_tokens={given.max_num_batched_tokens}"),
        BudgetTerm(name="non_torch", bytes=-non_torch_bytes(given.tensor_parallel_size), exact=False,
                   note="CUDA context and NCCL buffers"),
        BudgetTerm(name="cuda_graphs", bytes=-cuda_graph_bytes(given), exact=False,
                   note="none with --enforce-eager" if given.enforce_eager else "captured batch sizes"),
    ]  # fmt: skip
    return MemoryBudget(
        source="gpu_memory_utilization",
        total_bytes=total,
        gpu_memory_utilization=given.gpu_memory_utilization,
        terms=terms,
        available_kv_bytes=sum(term.bytes for term in terms),
    )


def activation_peak_bytes(given: BudgetInput) -> int:
    """Hidden states, attention and MLP intermediates for one batch, plus the sampler's logits."""
    model = given.model
    tp = given.tensor_parallel_size
    intermediate = (model.moe.moe_intermediate_size if model.moe else model.intermediate_size) // tp
    per_token = (10 * model.hidden_size + 3 * intermediate) * model.dtype_bytes
    logits = given.max_num_seqs * (model.vocab_size // tp) * SAMPLER_BYTES_PER_LOGIT
    return given.max_num_batched_tokens * per_token + logits


def non_torch_bytes(tensor_parallel_size: int) -> int:
    return GIB // 4 if tensor_parallel_size == 1 else GIB


def cuda_graph_bytes(given: BudgetInput) -> int:
    if given.enforce_eager or given.gpu.is_cpu:
        return 0
    return GIB // 2
