from __future__ import annotations

import shlex

import pytest

from tokengate.errors import InvalidInputError
from tokengate.fleet.engine_args import argv_flags, parse_vllm_args


def test_parses_the_seed_devstral_command() -> None:
    args = parse_vllm_args(
        "vllm serve mistralai/Devstral-Small-2-24B-Instruct-2512 --served-model-name devstral-small-2-24b "
        "--tool-call-parser mistral --enable-auto-tool-choice --tensor-parallel-size 2 --kv-cache-dtype fp8 "
        "--max-model-len 140000 --gpu-memory-utilization 0.94 --host 0.0.0.0 --port 8000"
    )
    assert args.model == "mistralai/Devstral-Small-2-24B-Instruct-2512"
    assert args.served_model_name == ["devstral-small-2-24b"]
    assert args.enable_auto_tool_choice is True
    assert (args.tensor_parallel_size, args.max_model_len, args.gpu_memory_utilization) == (2, 140000, 0.94)
    assert args.passthrough == {"host": "0.0.0.0", "port": "8000"}


def test_equals_form_underscores_and_json_values() -> None:
    args = parse_vllm_args(
        """--kv_cache_dtype fp8 --distributed-executor-backend=mp """
        """--rope-scaling='{"rope_type":"yarn","factor":4.0,"original_max_position_embeddings":32768}'"""
    )
    assert args.kv_cache_dtype == "fp8"
    assert args.passthrough == {"distributed_executor_backend": "mp"}
    assert args.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    assert args.given("rope_scaling")


def test_no_prefix_turns_a_boolean_off() -> None:
    args = parse_vllm_args("--no-enable-prefix-caching --enforce-eager")
    assert args.enable_prefix_caching is False
    assert args.enforce_eager is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--tensor-parallel-size two", "tensor-parallel-size"),
        ("--gpu-memory-utilization 1.5", "gpu-memory-utilization"),
        ("--hf-overrides '{oops'", "not valid JSON"),
        ("--max-model-len 'unterminated", "quoting"),
    ],
)
def test_bad_values_name_the_flag(text: str, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_vllm_args(text)


def test_round_trip_to_argv() -> None:
    text = "--max-model-len 8192 --enable-prefix-caching --served-model-name a b --swap-space 4 --port 9000"
    args = parse_vllm_args(text)
    again = parse_vllm_args(shlex.join(argv_flags(args)))
    assert again.model_dump() == args.model_dump()
