"""Weight bytes: from the safetensors index when known, else from parameter count and quantization."""

from __future__ import annotations

from pydantic import BaseModel

from tokengate.models.spec import ModelSpec


class ParameterCount(BaseModel):
    """Parameters split by how quantization treats them: linear layers shrink, the rest does not."""

    embeddings: int  # embed_tokens and an untied lm_head: kept in 16 bits by AWQ/GPTQ/FP8 checkpoints
    linear: int  # attention and MLP projections
    experts: int  # routed-expert projections (the part mxfp4 compresses)
    other: int  # norms, routers

    @property
    def total(self) -> int:
        return self.embeddings + self.linear + self.experts + self.other


def count_parameters(spec: ModelSpec) -> ParameterCount:
    h = spec.hidden_size
    embeddings = spec.vocab_size * h * (1 if spec.tie_word_embeddings else 2)
    attention = _attention_parameters(spec)
    linear = experts = other = 0
    for index, kind in enumerate(spec.layer_kinds):
        linear += attention if kind != "linear_attention" else _linear_attention_parameters(spec)
        other += 2 * h
        moe = spec.moe
        if moe and index >= moe.dense_layers:
            experts += moe.num_experts * 3 * h * moe.moe_intermediate_size
            linear += 3 * h * moe.shared_expert_intermediate_size
            other += h * moe.num_experts
        else:
            linear += 3 * h * spec.intermediate_size
    return ParameterCount(embeddings=embeddings, linear=linear, experts=experts, other=other + h)


def _attention_parameters(spec: ModelSpec) -> int:
    h = spec.hidden_size
    if spec.mla:
        # Down-projection to the latent, its up-projections, and the query path: close to DeepSeek's layout.
        latent = spec.mla.kv_lora_rank + spec.mla.qk_rope_head_dim
        heads_out = spec.num_attention_heads * spec.head_dim
        return h * latent + spec.mla.kv_lora_rank * 2 * heads_out + h * heads_out * 2
    q_out = spec.num_attention_heads * spec.head_dim
    kv_out = spec.num_kv_heads * spec.head_dim
    return h * q_out + 2 * h * kv_out + q_out * h


def _linear_attention_parameters(spec: ModelSpec) -> int:
    # Gated delta-net layers project to q, k, v, gates and back: about as large as full attention.
    return _attention_parameters(spec)


def estimated_weight_bytes(spec: ModelSpec) -> int:
    """What the checkpoint's weights take in memory, as loaded by vLLM."""
    counts = count_parameters(spec)
    wide = spec.dtype_bytes
    quant = spec.quantization
    if quant is None:
        return counts.total * wide
    method = quant.method
    if method == "mxfp4":  # experts in 4.25 bits (4-bit values + one 8-bit scale per 32), the rest 16-bit
        return int(counts.experts * 4.25 / 8) + (counts.embeddings + counts.linear + counts.other) * wide
    bits = quant.bits or (8 if method == "fp8" else 4)
    packed = counts.linear + counts.experts
    scale_bytes = 0
    if quant.group_size and quant.group_size > 0:
        scale_bytes = packed // quant.group_size * 4  # fp16 scale + packed zero point per group
    return int(packed * bits / 8) + scale_bytes + (counts.embeddings + counts.other) * wide


def weight_bytes(spec: ModelSpec) -> int:
    return spec.weight_bytes_from_index or estimated_weight_bytes(spec)
