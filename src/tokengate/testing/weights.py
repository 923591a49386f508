"""Random weights for tiny models, named as Hugging Face checkpoints name them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import save_file

if TYPE_CHECKING:
    from tokengate.testing.tiny_model import TinyModelSpec

INIT_STD = 0.02


def tensor_shapes(spec: TinyModelSpec) -> Iterator[tuple[str, tuple[int, ...]]]:
    """Every tensor of the checkpoint in a fixed order (the order fixes the random stream)."""
    q_out = spec.heads * spec.head_dim
    kv_out = spec.kv_heads * spec.head_dim
    yield "model.embed_tokens.weight", (spec.vocab_size, spec.hidden)
    for i in range(spec.layers):
        prefix = f"model.layers.{i}"
        yield f"{prefix}.input_layernorm.weight", (spec.hidden,)
        yield f"{prefix}.self_attn.q_proj.weight", (q_out, spec.hidden)
        yield f"{prefix}.self_attn.k_proj.weight", (kv_out, spec.hidden)
        yield f"{prefix}.self_attn.v_proj.weight", (kv_out, spec.hidden)
        yield f"{prefix}.self_attn.o_proj.weight", (spec.hidden, q_out)
        if spec.family == "qwen3":
            yield f"{prefix}.self_attn.q_norm.weight", (spec.head_dim,)
            yield f"{prefix}.self_attn.k_norm.weight", (spec.head_dim,)
        yield f"{prefix}.post_attention_layernorm.weight", (spec.hidden,)
        yield f"{prefix}.mlp.gate_proj.weight", (spec.intermediate, spec.hidden)
        yield f"{prefix}.mlp.up_proj.weight", (spec.intermediate, spec.hidden)
        yield f"{prefix}.mlp.down_proj.weight", (spec.hidden, spec.intermediate)
    yield "model.norm.weight", (spec.hidden,)
    if not spec.tie_word_embeddings:
        yield "lm_head.weight", (spec.vocab_size, spec.hidden)


def random_weights(spec: TinyModelSpec) -> dict[str, np.ndarray]:
    """Norms at one, matrices drawn from N(0, 0.02²); float32, which vLLM casts to the config dtype."""
    rng = np.random.default_rng(spec.seed)
    tensors: dict[str, np.ndarray] = {}
    for name, shape in tensor_shapes(spec):
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shape, dtype=np.float32)
        else:
            tensors[name] = rng.normal(0.0, INIT_STD, size=shape).astype(np.float32)
    return tensors


def save_random_weights(path: Path, spec: TinyModelSpec) -> None:
    save_file(random_weights(spec), str(path), metadata={"format": "pt"})
