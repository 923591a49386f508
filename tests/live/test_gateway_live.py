"""The gateway in front of real vLLM (CPU): the official SDK unchanged, repairs, streams, quotas, the ledger."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml

from tests.live.tools import WEATHER_TOOL
from tokengate.gateway.keys import KeyStore
from tokengate.gateway.ledger import Ledger
from tokengate.testing.tiny_model import Family, create_tiny_model, parse_spec, serve_args_for
from tokengate.testing.vllm_server import VllmServer, VllmServerConfig, free_port, start_vllm_server

pytestmark = pytest.mark.live


class RunningGateway:
    def __init__(self, fleet_file: Path, port: int) -> None:
        self.fleet_file = fleet_file
        self.port = port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        with (self.fleet_file.parent / "gateway.log").open("ab") as log:  # the child keeps its own copy
            self.process = subprocess.Popen(
                [sys.executable, "-m", "tokengate", "gateway", str(self.fleet_file)], stdout=log, stderr=log,
                start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("the gateway did not start: " + (self.fleet_file.parent / "gateway.log").read_text())

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)


def write_fleet(folder: Path, upstreams: dict[str, tuple[str, str]], port: int) -> Path:
    """A fleet of external engines (already running), with a keyed gateway in front."""
    fleet = {
        "state_dir": str(folder / "state"),
        "deployments": [
            {"name": name, "model": model, "url": url, "served_model_name": name, "family": family}
            for name, (url, family) in upstreams.items()
            for model in [name]
        ],
        "gateway": {"listen": f"127.0.0.1:{port}"},
    }
    path = folder / "fleet.yaml"
    path.write_text(yaml.safe_dump(fleet))
    return path


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, qwen3_server: VllmServer, mistral_server: VllmServer
) -> Iterator[tuple[RunningGateway, dict[str, str]]]:
    folder = tmp_path_factory.mktemp("gateway")
    port = free_port()
    fleet_file = write_fleet(
        folder,
        {
            qwen3_server.model_name: (qwen3_server.url, "qwen3"),
            mistral_server.model_name: (mistral_server.url, "mistral"),
        },
        port,
    )
    store = KeyStore(folder / "state" / "gateway.sqlite3")
    keys = {
        "full": store.create("full")[0],
        "qwen-only": store.create("qwen-only", models=[qwen3_server.model_name])[0],
        "small": store.create("small", tokens_per_day=60)[0],
    }
    running = RunningGateway(fleet_file, port)
    running.start()
    yield running, keys
    running.stop()


def client(gateway: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=120)


def test_sdk_sync_async_and_streaming_through_the_gateway(
    gateway: tuple[RunningGateway, dict[str, str]], qwen3_server: VllmServer, mistral_server: VllmServer
) -> None:
    running, keys = gateway
    with client(running, keys["full"]) as sdk:
        assert {m.id for m in sdk.models.list()} == {qwen3_server.model_name, mistral_server.model_name}
        for model in (qwen3_server.model_name, mistral_server.model_name):
            response = sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5
            )
            assert response.usage is not None
            assert response.usage.completion_tokens == 5
            stream = sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
            )
            chunks = list(stream)
            assert chunks[-1].choices[0].finish_reason == "length"
        forced = sdk.chat.completions.create(
            model=mistral_server.model_name, messages=[{"role": "user", "content": "Weather in Rome?"}],
            tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}}, max_tokens=64,
            seed=0,
        )  # fmt: skip
        assert forced.choices[0].message.tool_calls

    async def async_calls(model: str) -> tuple[list[int], list[str | None]]:
        async with openai.AsyncOpenAI(base_url=f"{running.url}/v1", api_key=keys["full"], max_retries=0) as sdk:
            responses = await asyncio.gather(
                *(
                    sdk.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": f"n{i}"}], max_tokens=3
                    )
                    for i in range(4)
                )
            )
            stream = await sdk.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True,
                stream_options={"include_usage": True},
            )  # fmt: skip
            finishes = [chunk.choices[0].finish_reason async for chunk in stream if chunk.choices]
        return [r.usage.completion_tokens for r in responses if r.usage], finishes[-1:]

    for model in (qwen3_server.model_name, mistral_server.model_name):
        assert asyncio.run(async_calls(model)) == ([3, 3, 3, 3], ["length"]), model


def test_completions_and_tokenize_pass_through(
    gateway: tuple[RunningGateway, dict[str, str]], qwen3_server: VllmServer
) -> None:
    running, keys = gateway
    with client(running, keys["full"]) as sdk:
        completion = sdk.completions.create(model=qwen3_server.model_name, prompt="Once upon", max_tokens=4)
    assert completion.usage is not None and completion.usage.completion_tokens == 4
    body = {"model": qwen3_server.model_name, "prompt": "Once upon a time"}
    direct = httpx.post(f"{qwen3_server.url}/tokenize", json=body, timeout=30).json()
    through = httpx.post(f"{running.url}/tokenize", json=body, headers={"Authorization": f"Bearer {keys['full']}"},
                         timeout=30)  # fmt: skip
    assert through.status_code == 200, through.text
    assert through.json()["tokens"] == direct["tokens"] and through.json()["count"] == direct["count"] > 0


def test_keys_are_checked(gateway: tuple[RunningGateway, dict[str, str]], mistral_server: VllmServer) -> None:
    running, keys = gateway
    with client(running, "tg-not-a-key") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    with client(running, keys["qwen-only"]) as sdk, pytest.raises(openai.PermissionDeniedError) as denied:
        sdk.chat.completions.create(model=mistral_server.model_name, messages=[{"role": "user", "content": "x"}])
    assert "may not use model" in str(denied.value)


SEED_CASES_REJECTED_BY_VLLM_032: dict[str, dict[str, Any]] = {  # the repair kind /metrics counts it under
    "empty_assistant_message": {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": ""},
            {"role": "user", "content": "again"},
        ]
    },
    "empty_tools": {"messages": [{"role": "user", "content": "hi"}], "tools": [], "tool_choice": "auto"},
    "tool_choice_without_tools": {"messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"},
}


@pytest.mark.parametrize("case", SEED_CASES_REJECTED_BY_VLLM_032)
def test_seed_repairs_turn_vllm_400s_into_answers(
    gateway: tuple[RunningGateway, dict[str, str]], mistral_server: VllmServer, case: str
) -> None:
    running, keys = gateway
    body = {"model": mistral_server.model_name, "max_tokens": 3, **SEED_CASES_REJECTED_BY_VLLM_032[case]}
    direct = httpx.post(f"{mistral_server.openai_base_url}/chat/completions", json=body, timeout=60)
    assert direct.status_code == 400, direct.text
    before = repairs_counted(running, case)
    through = httpx.post(
        f"{running.url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {keys['full']}"},
        timeout=60,
    )  # fmt: skip
    assert through.status_code == 200, through.text
    assert repairs_counted(running, case) == before + 1


def repairs_counted(running: RunningGateway, kind: str) -> float:
    metrics = httpx.get(f"{running.url}/metrics").text
    prefix = f'tokengate_repairs_total{{kind="{kind}"}} '
    return next((float(line.removeprefix(prefix)) for line in metrics.splitlines() if line.startswith(prefix)), 0.0)


def test_seed_cases_vllm_032_accepts_still_pass_through(
    gateway: tuple[RunningGateway, dict[str, str]], mistral_server: VllmServer
) -> None:
    """index in replayed calls, malformed arguments, a `toolu_` id: 200 directly and through the gateway
    (the mistral_common oracle in tests/unit/test_gateway_repairs.py shows what older versions rejected)."""
    running, keys = gateway
    tool_call = {"index": 0, "id": "toolu_01ABC123XYZ", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{ invalid json"}}  # fmt: skip
    body = {
        "model": mistral_server.model_name,
        "max_tokens": 3,
        "tools": [WEATHER_TOOL],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [tool_call]},
            {"role": "tool", "tool_call_id": "toolu_01ABC123XYZ", "content": "21C"},
        ],
    }
    headers = {"Authorization": f"Bearer {keys['full']}"}
    assert httpx.post(f"{mistral_server.openai_base_url}/chat/completions", json=body, timeout=60).status_code == 200
    assert httpx.post(f"{running.url}/v1/chat/completions", json=body, headers=headers, timeout=60).status_code == 200


def test_quota_and_ledger_add_up_to_the_engine_usage(
    gateway: tuple[RunningGateway, dict[str, str]], qwen3_server: VllmServer
) -> None:
    running, keys = gateway
    reported = 0
    statuses = []
    with client(running, keys["small"]) as sdk:
        for _ in range(6):
            try:
                response = sdk.chat.completions.create(
                    model=qwen3_server.model_name, messages=[{"role": "user", "content": "hi"}], max_tokens=8
                )
            except openai.RateLimitError as exc:
                statuses.append(429)
                assert exc.response.headers["retry-after"].isdigit()
                break
            statuses.append(200)
            assert response.usage is not None
            reported += response.usage.total_tokens
    assert statuses[-1] == 429  # 60 tokens a day is a few requests
    assert reported >= 60
    running.stop()  # SIGTERM flushes the ledger
    ledger = Ledger(running.fleet_file.parent / "state" / "gateway.sqlite3")
    try:
        assert ledger.tokens_used_since("small", 0) == reported
    finally:
        ledger.close()
    running.start()


def test_killing_the_engine_mid_stream_ends_the_stream_with_an_error(tmp_path: Path) -> None:
    model = create_tiny_model(tmp_path / "m", parse_spec(family="qwen3")).path
    engine = start_vllm_server(
        VllmServerConfig(model=model, served_model_name="victim", extra_args=serve_args_for(Family.QWEN3),
                         log_path=tmp_path / "vllm.log")
    )  # fmt: skip
    port = free_port()
    fleet_file = write_fleet(tmp_path, {"victim": (engine.url, "qwen3")}, port)
    fleet = yaml.safe_load(fleet_file.read_text())
    fleet["gateway"]["auth"] = "none"
    fleet_file.write_text(yaml.safe_dump(fleet))
    running = RunningGateway(fleet_file, port)
    running.start()
    try:
        # ignore_eos: random weights can sample EOS and end the stream cleanly before the kill lands.
        body = {"model": "victim", "messages": [{"role": "user", "content": "go"}], "max_tokens": 4000,
                "ignore_eos": True, "stream": True}  # fmt: skip
        events: list[str] = []
        with httpx.stream("POST", f"{running.url}/v1/chat/completions", json=body, timeout=30) as response:
            lines = response.iter_lines()
            for line in lines:
                if line.startswith("data: "):
                    events.append(line)
                if len(events) == 5:
                    os.killpg(engine.process.pid, signal.SIGKILL)  # no goodbye: SIGTERM would end the stream cleanly
                    killed_at = time.monotonic()
                    break
            events += [line for line in lines if line.startswith("data: ")]
            ended_after = time.monotonic() - killed_at
        assert "[DONE]" not in events[-1], "the engine finished its answer before it was killed"
        error = json.loads(events[-1].removeprefix("data: "))["error"]
        assert "victim" in error["message"]
        print(f"stream ended {ended_after * 1000:.0f} ms after the engine was killed")
    finally:
        running.stop()
        engine.stop()


def test_sigkill_of_the_gateway_loses_at_most_one_flush_window(
    gateway: tuple[RunningGateway, dict[str, str]], qwen3_server: VllmServer
) -> None:
    running, keys = gateway
    database = running.fleet_file.parent / "state" / "gateway.sqlite3"

    def rows() -> int:
        ledger = Ledger(database)
        try:
            return sum(summary.requests for summary in ledger.usage(by="key", since=None))
        finally:
            ledger.close()

    before = rows()
    with client(running, keys["full"]) as sdk:
        for _ in range(3):
            sdk.chat.completions.create(model=qwen3_server.model_name, messages=[{"role": "user", "content": "a"}],
                                        max_tokens=2)  # fmt: skip
        time.sleep(2.5)  # more than the 1 s flush window: these three are on disk
        for _ in range(2):
            sdk.chat.completions.create(model=qwen3_server.model_name, messages=[{"role": "user", "content": "b"}],
                                        max_tokens=2)  # fmt: skip
    running.stop(signal.SIGKILL)
    after = rows()
    assert before + 3 <= after <= before + 5
    running.start()


def test_no_key_reaches_the_gateway_log(gateway: tuple[RunningGateway, dict[str, str]]) -> None:
    """Last in this module: by now the log holds every start, request and shutdown of the keyed gateway."""
    running, keys = gateway
    with client(running, "tg-a-wrong-key-that-must-not-be-logged") as sdk, pytest.raises(openai.AuthenticationError):
        sdk.models.list()
    log = (running.fleet_file.parent / "gateway.log").read_text()
    assert log  # the gateway writes its startup lines there
    for secret in [*keys.values(), "tg-a-wrong-key-that-must-not-be-logged"]:
        assert secret not in log
