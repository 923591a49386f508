"""vLLM's KV-cache arithmetic, in bytes, as vLLM 0.32 does it (v1/core/kv_cache_utils.py).

A *page* holds one block of tokens for one layer. Layers are grouped by
attention type into groups of equal size (padding the last group of a type);
every group draws blocks from one shared pool whose block costs
`group_size × page` bytes. A request at max_model_len needs, per group,
`ceil(len / block)` blocks for full attention, `ceil(min(window - 1 +
in_flight, len) / block) + 1` for a sliding window, one state block for a
linear-attention (Mamba-style) layer. The pool holds `available // bytes_per_block`
blocks; vLLM keeps one of them as its null block when checking that one
max-length request fits.
"""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel

from tokengate.models.spec import LayerKind, ModelSpec

CUDA_BLOCK_SIZE = 16
CPU_BLOCK_SIZE = 128  # vLLM's CPU platform default; measured in tests/live/test_planner_live.py
KV_DTYPE_BYTES = {"auto": None, "bfloat16": 2, "float16": 2, "fp8": 1, "fp8_e4m3": 1, "fp8_e5m2": 1, "float32": 4}


class KvSettings(BaseModel):
    """The engine arguments that shape the KV cache."""

    block_size: int = CUDA_BLOCK_SIZE
    tensor_parallel_size: int = 1
    kv_cache_dtype: str = "auto"
    max_num_batched_tokens: int = 8192


class KvCacheGroup(BaseModel):
    kind: LayerKind
    layers: int  # layers sharing one block table (the group size)
    page_bytes: int  # one block of one layer
    blocks_per_request: int  # at max_model_len


class KvLayout(BaseModel):
    block_size: int
    kv_bytes_per_token: int  # every attention layer of one rank, full-attention accounting
    bytes_per_block: int  # one block of the shared pool
    groups: list[KvCacheGroup]
    approximate: bool = False  # linear-attention state is modelled, not measured

    @property
    def blocks_per_request(self) -> int:
        return sum(group.blocks_per_request for group in self.groups)

    @property
    def bytes_per_request(self) -> int:
        return self.bytes_per_block * self.blocks_per_request


class KvCapacity(BaseModel):
    num_blocks: int
    kv_cache_tokens: int  # what vLLM logs as "KV cache size: N tokens"
    max_concurrency: float  # "Maximum concurrency for M tokens per request: X"
    kv_bytes_needed: int  # for one request at max_model_len
    fits_one_request: bool
    max_model_len_fit: int  # vLLM's "estimated maximum model length" when it does not fit


def kv_dtype_bytes(kv_cache_dtype: str, model: ModelSpec) -> int:
    size = KV_DTYPE_BYTES.get(kv_cache_dtype)
    return size if size is not None else model.dtype_bytes


def kv_heads_per_rank(model: ModelSpec, tensor_parallel_size: int) -> int:
    """KV heads are split across TP ranks, and replicated once TP exceeds their number."""
    return max(1, model.num_kv_heads // tensor_parallel_size)


def page_bytes(model: ModelSpec, kind: LayerKind, *, block_size: int, tp: int, dtype_bytes: int) -> int:
    if kind == "mla":  # one latent vector (kv_lora_rank + rope dims) per token, not split by TP
        assert model.mla is not None
        return block_size * (model.mla.kv_lora_rank + model.mla.qk_rope_head_dim) * dtype_bytes
    return 2 * block_size * kv_heads_per_rank(model, tp) * model.head_dim * dtype_bytes


def kv_layout(model: ModelSpec, max_model_len: int, settings: KvSettings) -> KvLayout:
    block_size = settings.block_size
    dtype_bytes = kv_dtype_bytes(settings.kv_cache_dtype, model)
    counts = Counter(model.layer_kinds)
    attention_kinds = [kind for kind in counts if kind != "linear_attention"]
    page = page_bytes(
        model, attention_kinds[0] if attention_kinds else "full_attention",
        block_size=block_size, tp=settings.tensor_parallel_size, dtype_bytes=dtype_bytes,
    )  # fmt: skip
    group_size = _group_size(list(counts.values()))
    groups: list[KvCacheGroup] = []
    for kind, count in counts.items():
        blocks = _blocks_per_request(model, kind, max_model_len, block_size, settings.max_num_batched_tokens)
        groups += [KvCacheGroup(kind=kind, layers=group_size, page_bytes=page, blocks_per_request=blocks)] * (
            -(-count // group_size)
        )
    per_token = sum(counts[kind] for kind in attention_kinds) * page // block_size
    return KvLayout(
        block_size=block_size,
        kv_bytes_per_token=per_token,
        bytes_per_block=group_size * page,
        groups=groups,
        approximate="linear_attention" in counts,
    )


def _group_size(layer_counts: list[int]) -> int:
    """vLLM's rule: the smallest type's layer count, or the largest when they are within 1.5x."""
    smallest, largest = min(layer_counts), max(layer_counts)
    return largest if largest < smallest * 1.5 else smallest


def _blocks_per_request(
    model: ModelSpec, kind: LayerKind, max_model_len: int, block_size: int, in_flight_tokens: int
) -> int:
    if kind == "sliding_attention" and model.sliding_window:
        tokens = min(model.sliding_window - 1 + in_flight_tokens, max_model_len)
        return -(-tokens // block_size) + 1
    if kind == "linear_attention":
        return 1
    return -(-max_model_len // block_size)


def kv_capacity(
    model: ModelSpec,
    available_kv_bytes: int,
    max_model_len: int,
    settings: KvSettings,
    *,
    longest_to_try: int | None = None,
) -> KvCapacity:
    """How many tokens and requests `available_kv_bytes` holds, and the longest context that fits.

    `longest_to_try` widens the search beyond max_model_len (vLLM itself stops there).
    """
    layout = kv_layout(model, max_model_len, settings)
    num_blocks = max(0, available_kv_bytes // layout.bytes_per_block)
    concurrency = num_blocks / layout.blocks_per_request
    usable = available_kv_bytes - layout.bytes_per_block  # the null block
    upper = max(max_model_len, longest_to_try or 0)
    return KvCapacity(
        num_blocks=num_blocks,
        kv_cache_tokens=int(concurrency * max_model_len),
        max_concurrency=concurrency,
        kv_bytes_needed=layout.bytes_per_request,
        fits_one_request=layout.bytes_per_request <= usable,
        max_model_len_fit=_longest_fitting_length(model, usable, upper, settings),
    )


def _longest_fitting_length(model: ModelSpec, usable_bytes: int, upper: int, settings: KvSettings) -> int:
    """Binary search, as vLLM does, for the largest length whose request fits; 0 if none does."""

    def fits(length: int) -> bool:
        return kv_layout(model, length, settings).bytes_per_request <= usable_bytes

    if usable_bytes <= 0 or not fits(1):
        return 0
    low, high, best = 1, upper, 1
    while low <= high:
        middle = (low + high) // 2
        if fits(middle):
            best, low = middle, middle + 1
        else:
            high = middle - 1
    return best
