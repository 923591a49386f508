"""vLLM's KV-cache arithmetic, checked against numbers vLLM itself printed."""

from __future__ import annotations

import pytest

from tokengate.models import load_model_spec
from tokengate.models.spec import model_spec_from_config
from tokengate.plan.kv_cache import KvSettings, kv_capacity, kv_layout

GIB = 1024**3
DEVSTRAL = "mistralai/Devstral-Small-2-24B-Instruct-2512"


def test_devstral_on_gb10_reproduces_the_seed_error() -> None:
    """seed 002: 'To serve at least one request with the models's max seq len (393216), 60.00 GiB KV cache is
    needed, which is larger than the available KV cache memory (56.13 GiB) ... estimated maximum model length
    is 367824.'"""
    model = load_model_spec(DEVSTRAL)
    settings = KvSettings()
    assert kv_layout(model, 393216, settings).kv_bytes_per_token == 160 * 1024
    capacity = kv_capacity(model, int(56.13 * GIB), 393216, settings)
    assert not capacity.fits_one_request
    assert f"{capacity.kv_bytes_needed / GIB:.2f}" == "60.00"
    assert abs(capacity.max_model_len_fit - 367824) <= 32


def test_devstral_on_gb10_after_the_fix() -> None:
    """seed 002: 74.43 GiB available, 487,744 tokens, 7.44x for 65,536-token requests."""
    capacity = kv_capacity(load_model_spec(DEVSTRAL), int(74.43 * GIB), 65536, KvSettings())
    assert capacity.fits_one_request
    assert abs(capacity.kv_cache_tokens - 487744) <= 32
    assert f"{capacity.max_concurrency:.2f}" == "7.44"


def test_tensor_parallel_splits_kv_heads_and_fp8_halves() -> None:
    model = load_model_spec("Qwen/Qwen3-32B-AWQ")  # 64 layers, 8 KV heads of 128
    one = kv_layout(model, 32768, KvSettings()).kv_bytes_per_token
    assert one == 2 * 64 * 8 * 128 * 2
    assert kv_layout(model, 32768, KvSettings(tensor_parallel_size=2)).kv_bytes_per_token == one // 2
    assert kv_layout(model, 32768, KvSettings(kv_cache_dtype="fp8")).kv_bytes_per_token == one // 2


def test_kv_heads_are_replicated_beyond_their_count() -> None:
    model = load_model_spec("Qwen/Qwen2-1.5B-Instruct-AWQ")  # 2 KV heads
    four = kv_layout(model, 4096, KvSettings(tensor_parallel_size=4)).kv_bytes_per_token
    two = kv_layout(model, 4096, KvSettings(tensor_parallel_size=2)).kv_bytes_per_token
    assert four == two


def test_mla_stores_one_latent_per_token() -> None:
    layout = kv_layout(load_model_spec("deepseek-ai/DeepSeek-V3"), 32768, KvSettings(tensor_parallel_size=8))
    assert layout.kv_bytes_per_token == 61 * (512 + 64) * 2  # not divided by TP


def test_sliding_window_layers_hold_only_the_window() -> None:
    model = load_model_spec("openai/gpt-oss-20b")  # 12 sliding (128) + 12 full layers
    layout = kv_layout(model, 131072, KvSettings(max_num_batched_tokens=8192))
    blocks = sorted(group.blocks_per_request for group in layout.groups)
    assert blocks == [-(-(128 - 1 + 8192) // 16) + 1, 131072 // 16]
    assert layout.bytes_per_block == 12 * 2 * 16 * 8 * 64 * 2


def test_gemma_groups_pad_to_the_smallest_type() -> None:
    layout = kv_layout(load_model_spec("google/gemma-3-27b-it"), 8192, KvSettings())
    kinds = [group.kind for group in layout.groups]
    assert kinds.count("full_attention") == 1
    assert kinds.count("sliding_attention") == 6  # 52 sliding layers in groups of 10
    assert all(group.layers == 10 for group in layout.groups)


def test_cpu_block_size_numbers_match_a_measured_vllm_log() -> None:
    """vLLM CPU logged 'CPU KV cache size: 262,144 tokens, Maximum concurrency for 8,192 tokens: 32.00x'
    for the default tiny qwen3 (2 layers, 2 KV heads of 64) with 256 MiB of KV memory."""
    config = {"num_hidden_layers": 2, "hidden_size": 256, "num_attention_heads": 4, "num_key_value_heads": 2,
              "head_dim": 64, "model_type": "qwen3", "max_position_embeddings": 32768}  # fmt: skip
    model = model_spec_from_config(config, "tiny")
    capacity = kv_capacity(model, 256 * 1024**2, 8192, KvSettings(block_size=128))
    assert capacity.kv_cache_tokens == 262144
    assert capacity.max_concurrency == pytest.approx(32.0)
