from tokengate.engine.log import parse_kv_cache_report, parse_not_enough_kv_cache

# Lines as vLLM printed them (seed 002 for the GPU error; our CPU runs for the rest).
CPU_REPORT = (
    "(EngineCore pid=2620) INFO 11-25 06:31:06 [kv_cache_utils.py:2327] CPU KV cache size: 262,144 tokens, "
    "Maximum concurrency for 8,192 tokens per request: 32.00x"
)
SEED_ERROR = (
    "ValueError: To serve at least one request with the models's max seq len (393216),\n"
    "60.00 GiB KV cache is needed, which is larger than the available KV cache memory (56.13 GiB). "
    "Based on the available memory, the estimated maximum model length is 367824. Try increasing"
)


def test_kv_cache_report() -> None:
    report = parse_kv_cache_report("noise\n" + CPU_REPORT + "\nmore")
    assert report is not None
    assert (report.device, report.kv_cache_tokens, report.max_model_len) == ("CPU", 262144, 8192)
    assert report.max_concurrency == 32.0
    assert parse_kv_cache_report("nothing here") is None


def test_not_enough_kv_cache_error() -> None:
    error = parse_not_enough_kv_cache(SEED_ERROR)
    assert error is not None
    assert (error.max_model_len, error.needed_gib, error.available_gib) == (393216, 60.0, 56.13)
    assert error.estimated_max_model_len == 367824
