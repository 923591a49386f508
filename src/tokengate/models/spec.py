"""`ModelSpec`: the architecture facts of a model, read from its Hugging Face `config.json`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from tokengate.errors import InvalidInputError

LayerKind = Literal["full_attention", "sliding_attention", "linear_attention", "mla"]

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "half": 2, "float": 4, "fp8": 1}


class RopeScaling(BaseModel):
    model_config = ConfigDict(frozen=True)

    rope_type: str
    factor: float | None = None
    original_max_position_embeddings: int | None = None


class Quantization(BaseModel):
    """How the checkpoint's weights are stored, as far as memory and kernels care."""

    model_config = ConfigDict(frozen=True)

    method: str  # awq, gptq, fp8, compressed-tensors, mxfp4, bitsandbytes...
    bits: int | None = None
    group_size: int | None = None
    weight_block_size: tuple[int, int] | None = None


class MixtureOfExperts(BaseModel):
    model_config = ConfigDict(frozen=True)

    num_experts: int
    experts_per_token: int | None = None
    moe_intermediate_size: int
    shared_expert_intermediate_size: int = 0
    dense_layers: int = 0  # leading layers with a plain MLP (DeepSeek's first_k_dense_replace)


class MultiLatentAttention(BaseModel):
    model_config = ConfigDict(frozen=True)

    kv_lora_rank: int
    qk_rope_head_dim: int


class ModelSpec(BaseModel):
    """What vLLM needs to know about a model to size its weights and KV cache."""

    model_config = ConfigDict(frozen=True)

    id: str
    family: str
    architecture: str
    num_layers: int
    num_attention_heads: int
    num_kv_heads: int
    head_dim: int
    hidden_size: int
    intermediate_size: int
    vocab_size: int
    dtype: str = "bfloat16"
    tie_word_embeddings: bool = False
    max_position_embeddings: int
    rope_scaling: RopeScaling | None = None
    quantization: Quantization | None = None
    moe: MixtureOfExperts | None = None
    mla: MultiLatentAttention | None = None
    sliding_window: int | None = None
    layer_kinds: tuple[LayerKind, ...]
    weight_bytes_from_index: int | None = None

    @property
    def dtype_bytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 2)

    def count_layers(self, kind: LayerKind) -> int:
        return sum(1 for k in self.layer_kinds if k == kind)

    @property
    def native_context(self) -> int:
        """The length the model was trained on, before any rope scaling in its own config."""
        if self.rope_scaling and self.rope_scaling.original_max_position_embeddings:
            return self.rope_scaling.original_max_position_embeddings
        return self.max_position_embeddings


def model_spec_from_config(config: dict[str, Any], model_id: str, *, weight_bytes: int | None = None) -> ModelSpec:
    """Read a HF config.json (multimodal configs through their `text_config`)."""
    text = _text_config(config)
    try:
        layers = int(text["num_hidden_layers"])
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
    except KeyError as exc:
        raise InvalidInputError(
            f"config of {model_id} has no {exc.args[0]!r}; is it a decoder LLM config.json?"
        ) from None
    architecture = (config.get("architectures") or ["unknown"])[0]
    model_type = str(text.get("model_type") or config.get("model_type") or "")
    return ModelSpec(
        id=model_id,
        family=detect_family(model_id, architecture, model_type),
        architecture=architecture,
        num_layers=layers,
        num_attention_heads=heads,
        num_kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        hidden_size=hidden,
        intermediate_size=int(text.get("intermediate_size") or 4 * hidden),
        vocab_size=int(text.get("vocab_size") or config.get("vocab_size") or 32000),
        dtype=_dtype(config, text),
        tie_word_embeddings=bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        max_position_embeddings=int(text.get("max_position_embeddings") or 4096),
        rope_scaling=_rope_scaling(text),
        quantization=_quantization(config.get("quantization_config") or text.get("quantization_config")),
        moe=_moe(text),
        mla=_mla(text),
        sliding_window=text.get("sliding_window") if _uses_sliding_window(text) else None,
        layer_kinds=_layer_kinds(text, layers),
        weight_bytes_from_index=weight_bytes,
    )


# What a model's or a served name's text says of its family, when its config.json is not at hand (offline, a hub
# id, a served name): first match wins, so longer tokens come before their prefixes.
NAME_FAMILIES = (
    ("qwen3", "qwen3"),
    ("qwen2", "qwen2"),
    ("devstral", "mistral"),
    ("mistral", "mistral"),
    ("llama", "llama"),
    ("gpt-oss", "gpt"),
    ("gemma", "gemma"),
    ("deepseek", "deepseek"),
)


def family_in_name(name: str) -> str | None:
    lowered = name.lower()
    return next((family for token, family in NAME_FAMILIES if token in lowered), None)


def detect_family(model_id: str, architecture: str, model_type: str) -> str:
    """The family decides parsers and request repairs: qwen3, qwen3-coder, mistral, llama, gpt-oss..."""
    name = model_id.lower()
    kind = model_type.lower()
    if kind.startswith("qwen3"):
        if "coder" in name:
            return "qwen3-coder"
        return "qwen3-next" if kind == "qwen3_next" else "qwen3"
    rules = (
        ("qwen2", "qwen2"),
        ("mistral", "mistral"),
        ("pixtral", "mistral"),
        ("ministral", "mistral"),
        ("llama", "llama"),
        ("gpt_oss", "gpt-oss"),
        ("gemma", "gemma"),
        ("deepseek", "deepseek"),
    )
    for prefix, family in rules:
        if kind.startswith(prefix):
            return family
    if "Mistral" in architecture or "Pixtral" in architecture:
        return "mistral"
    return kind or "unknown"


# Keys some configs leave out because transformers fills them with defaults.
_MODEL_TYPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "gemma3_text": {
        "vocab_size": 262208, "max_position_embeddings": 131072, "sliding_window": 1024,
        "sliding_window_pattern": 6,
    },
}  # fmt: skip


def _text_config(config: dict[str, Any]) -> dict[str, Any]:
    nested = config.get("text_config")
    text = nested if isinstance(nested, dict) and "num_hidden_layers" in nested else config
    return {**_MODEL_TYPE_DEFAULTS.get(str(text.get("model_type")), {}), **text}


def _dtype(config: dict[str, Any], text: dict[str, Any]) -> str:
    value = text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or config.get("dtype")
    return str(value or "bfloat16").removeprefix("torch.")


def _rope_scaling(text: dict[str, Any]) -> RopeScaling | None:
    raw = text.get("rope_scaling") or text.get("rope_parameters")
    if not isinstance(raw, dict):
        return None
    rope_type = raw.get("rope_type") or raw.get("type")
    if not rope_type or rope_type == "default":
        return None
    original = raw.get("original_max_position_embeddings")
    return RopeScaling(
        rope_type=str(rope_type),
        factor=float(raw["factor"]) if raw.get("factor") is not None else None,
        original_max_position_embeddings=int(original) if original else None,
    )


def _quantization(raw: Any) -> Quantization | None:
    if not isinstance(raw, dict):
        return None
    method = str(raw.get("quant_method") or raw.get("quant_type") or "unknown").lower()
    bits = raw.get("bits") or raw.get("w_bit")
    if method == "compressed-tensors":
        bits = _compressed_tensors_bits(raw)
    if method == "fp8":
        bits = 8
    block = raw.get("weight_block_size")
    return Quantization(
        method=method,
        bits=int(bits) if bits else None,
        group_size=raw.get("group_size") or raw.get("q_group_size"),
        weight_block_size=tuple(block) if block else None,
    )


def _compressed_tensors_bits(raw: dict[str, Any]) -> int | None:
    for group in (raw.get("config_groups") or {}).values():
        weights = group.get("weights") or {}
        if weights.get("num_bits"):
            return int(weights["num_bits"])
    return None


def _moe(text: dict[str, Any]) -> MixtureOfExperts | None:
    experts = text.get("num_experts") or text.get("num_local_experts") or text.get("n_routed_experts")
    if not experts:
        return None
    return MixtureOfExperts(
        num_experts=int(experts),
        experts_per_token=text.get("num_experts_per_tok"),
        moe_intermediate_size=int(text.get("moe_intermediate_size") or text.get("intermediate_size")),
        shared_expert_intermediate_size=int(
            text.get("shared_expert_intermediate_size")
            or (text.get("n_shared_experts") or 0) * (text.get("moe_intermediate_size") or 0)
        ),
        dense_layers=int(text.get("first_k_dense_replace") or 0),
    )


def _mla(text: dict[str, Any]) -> MultiLatentAttention | None:
    if not text.get("kv_lora_rank"):
        return None
    return MultiLatentAttention(
        kv_lora_rank=int(text["kv_lora_rank"]), qk_rope_head_dim=int(text.get("qk_rope_head_dim") or 64)
    )


def _uses_sliding_window(text: dict[str, Any]) -> bool:
    if not text.get("sliding_window"):
        return False
    if "use_sliding_window" in text:  # Qwen configs carry a window they do not use
        return bool(text["use_sliding_window"])
    return True


def _layer_kinds(text: dict[str, Any], layers: int) -> tuple[LayerKind, ...]:
    if text.get("kv_lora_rank"):
        return ("mla",) * layers
    declared = text.get("layer_types")
    if isinstance(declared, list) and len(declared) == layers:
        return tuple(_normalise_kind(kind) for kind in declared)
    interval = text.get("full_attention_interval")
    if interval:  # Qwen3-Next: every Nth layer is full attention, the rest linear attention
        return tuple("full_attention" if (i + 1) % int(interval) == 0 else "linear_attention" for i in range(layers))
    if _uses_sliding_window(text):
        pattern = text.get("sliding_window_pattern")
        if pattern:  # Gemma 3: every Nth layer is global
            return tuple(
                "full_attention" if (i + 1) % int(pattern) == 0 else "sliding_attention" for i in range(layers)
            )
        return ("sliding_attention",) * layers
    return ("full_attention",) * layers


def _normalise_kind(kind: str) -> LayerKind:
    if "sliding" in kind or kind == "local_attention":
        return "sliding_attention"
    if "linear" in kind or "mamba" in kind:
        return "linear_attention"
    return "full_attention"
