from __future__ import annotations

import gc
import json
import sqlite3
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tokengate.cli import keys as keys_cli
from tokengate.cli import usage as usage_cli
from tokengate.gateway.ledger import DAY_SECONDS, Ledger, UsageRow, utc_day_start

NOW = 20_000 * 86_400 + 3_600.0  # an hour into a UTC day in 2024
TODAY = utc_day_start(NOW)
runner = CliRunner()


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _row(key: str | None = "alice", model: str = "qwen3", status: int = 200, **fields: object) -> UsageRow:
    values: dict[str, object] = {
        "time": NOW, "key_name": key, "model": model, "deployment": "mini", "prompt_tokens": 100,
        "cached_tokens": 40, "completion_tokens": 10, "status": status, "latency_ms": 50.0, "ttft_ms": 12.0,
    }  # fmt: skip
    return UsageRow.model_validate(values | fields)


def _written(path: Path) -> int:
    with sqlite3.connect(path) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM usage").fetchone()
    connection.close()
    return int(count)


def _ledger(path: Path, **kwargs: object) -> Ledger:
    """A ledger whose thread never flushes on its own, so tests decide when rows reach the disk."""
    return Ledger(path, flush_interval=3600, clock=FakeClock(), **kwargs)  # type: ignore[arg-type]


def test_rows_reach_the_table_on_flush(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    ledger = _ledger(path)
    for _ in range(3):
        ledger.record(_row())
    assert _written(path) == 0
    ledger.flush()
    assert _written(path) == 3
    ledger.close()


def test_close_flushes_and_stops_the_thread(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    ledger = _ledger(path)
    ledger.record(_row())
    ledger.record(_row(key=None))
    ledger.close()
    assert _written(path) == 2
    assert ledger._thread is not None
    assert not ledger._thread.is_alive()
    ledger.close()
    with pytest.raises(RuntimeError, match="closed"):
        ledger.record(_row())


def test_a_full_batch_is_written_without_waiting_for_the_interval(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    ledger = _ledger(path, max_batch=5)
    for _ in range(5):
        ledger.record(_row())
    for _ in range(1000):  # the writer thread runs as soon as it is woken; poll until it has
        if _written(path) == 5:
            break
        time.sleep(0.01)
    assert _written(path) == 5
    ledger.close()


def test_tokens_used_since_counts_written_and_queued_rows(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    ledger = _ledger(path)
    ledger.record(_row(prompt_tokens=100, completion_tokens=10))
    ledger.record(_row(key="bob", prompt_tokens=7, completion_tokens=3))
    ledger.flush()
    ledger.record(_row(prompt_tokens=20, completion_tokens=2, time=NOW + 60))
    ledger.record(_row(prompt_tokens=1000, completion_tokens=0, time=TODAY - 1))  # yesterday
    assert ledger.tokens_used_since("alice", TODAY) == 132
    assert ledger.tokens_used_since("bob", TODAY) == 10
    assert ledger.tokens_used_since("carol", TODAY) == 0
    # any other window reads the table and the queue
    assert ledger.tokens_used_since("alice", NOW + 30) == 22
    assert ledger.tokens_used_since("alice", TODAY - DAY_SECONDS) == 1132
    ledger.close()

    reopened = _ledger(path)  # seeded from the table
    assert reopened.tokens_used_since("alice", TODAY) == 132
    assert reopened.tokens_used_since("bob", TODAY) == 10
    reopened.close()


def test_the_daily_total_starts_again_at_midnight_utc(tmp_path: Path) -> None:
    clock = FakeClock()
    ledger = Ledger(tmp_path / "gateway.sqlite3", flush_interval=3600, clock=clock)
    ledger.record(_row())
    assert ledger.tokens_used_since("alice", TODAY) == 110
    clock.now = TODAY + DAY_SECONDS + 5
    tomorrow = utc_day_start(clock.now)
    assert ledger.tokens_used_since("alice", tomorrow) == 0
    ledger.record(_row(time=clock.now))
    assert ledger.tokens_used_since("alice", tomorrow) == 110
    ledger.close()


def test_usage_groups_by_key_and_model_and_counts_errors(tmp_path: Path) -> None:
    ledger = _ledger(tmp_path / "gateway.sqlite3")
    ledger.record(_row(key="alice", model="qwen3", latency_ms=10.0))
    ledger.record(_row(key="alice", model="devstral", status=500, latency_ms=30.0, cached_tokens=None))
    ledger.record(_row(key="alice", model="qwen3", status=429, latency_ms=20.0, prompt_tokens=0, completion_tokens=0))
    ledger.record(_row(key=None, model="qwen3", latency_ms=40.0))
    ledger.record(_row(key="bob", model="qwen3", latency_ms=5.0, time=NOW - 7200))

    by_key = {s.group: s for s in ledger.usage(by="key")}
    assert set(by_key) == {"alice", "bob", None}
    alice = by_key["alice"]
    assert (alice.requests, alice.errors, alice.prompt_tokens, alice.completion_tokens) == (3, 2, 200, 20)
    assert alice.cached_tokens == 80
    assert alice.p50_latency_ms == 20.0
    assert by_key[None].requests == 1

    by_model = {s.group: s for s in ledger.usage(by="model")}
    assert (by_model["qwen3"].requests, by_model["qwen3"].errors) == (4, 1)
    assert by_model["qwen3"].p50_latency_ms == 15.0  # median of 5, 10, 20, 40
    assert (by_model["devstral"].requests, by_model["devstral"].errors) == (1, 1)

    recent = ledger.usage(by="key", since=NOW - 60)
    assert {s.group for s in recent} == {"alice", None}
    assert ledger.usage(by="key")[0].group == "alice"  # busiest first
    ledger.close()


def test_after_a_crash_a_new_ledger_sees_exactly_the_flushed_rows(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    crashed = _ledger(path)
    for _ in range(3):
        crashed.record(_row())
    crashed.flush()
    crashed.record(_row(key="lost"))
    crashed.record(_row(key="lost"))
    thread = crashed._thread
    del crashed  # no close(): the queued rows are gone, as with SIGKILL
    gc.collect()
    assert thread is not None
    thread.join(timeout=10)
    assert not thread.is_alive()

    reopened = _ledger(path)
    assert reopened.tokens_used_since("alice", TODAY) == 330
    assert reopened.tokens_used_since("lost", TODAY) == 0
    assert [(s.group, s.requests) for s in reopened.usage(by="key")] == [("alice", 3)]
    reopened.close()


def _fleet(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: a, model: Qwen/Qwen3-8B, port: 8001}\n")
    return fleet


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(keys_cli.app, name="keys")
    app.command("usage")(usage_cli.usage)
    return app


def test_usage_cli_json_and_table(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    ledger = Ledger(keys_cli.database_path(fleet))
    ledger.record(_row(key="alice", model="qwen3"))
    ledger.record(_row(key="bob", model="qwen3", status=503))
    ledger.close()

    by_model = runner.invoke(_app(), ["usage", "--fleet", str(fleet), "--by", "model", "--since", "all", "--json"])
    assert by_model.exit_code == 0, by_model.output
    (summary,) = json.loads(by_model.stdout)
    assert (summary["group"], summary["requests"], summary["errors"]) == ("qwen3", 2, 1)

    table = runner.invoke(_app(), ["usage", "--fleet", str(fleet), "--since", "all"])
    assert table.exit_code == 0, table.output
    assert "alice" in table.output
    assert "bob" in table.output

    recent = runner.invoke(_app(), ["usage", "--fleet", str(fleet), "--since", "30m", "--json"])
    assert json.loads(recent.stdout) == []  # the rows are from 2024


@pytest.mark.parametrize("since", ["5x", "0d", "d", "-1h", "1 day"])
def test_usage_cli_rejects_a_bad_since(tmp_path: Path, since: str) -> None:
    result = runner.invoke(_app(), ["usage", "--fleet", str(_fleet(tmp_path)), "--since", since])
    assert result.exit_code == 2
    assert "--since" in result.output


def test_parse_since() -> None:
    assert usage_cli.parse_since("all", NOW) is None
    assert usage_cli.parse_since("2d", NOW) == NOW - 2 * DAY_SECONDS
    assert usage_cli.parse_since("3h", NOW) == NOW - 3 * 3600
    assert usage_cli.parse_since("15m", NOW) == NOW - 900


def test_cached_tokens_no_engine_reported_are_unknown_not_zero(tmp_path: Path) -> None:
    """vLLM without --enable-prompt-tokens-details reports no cached counts: the summary must not claim 0 hits."""
    ledger = _ledger(tmp_path / "gateway.sqlite3")
    ledger.record(_row(model="plain", cached_tokens=None))
    ledger.record(_row(model="detailed", cached_tokens=0))
    by_model = {s.group: s for s in ledger.usage(by="model")}
    assert by_model["plain"].cached_tokens is None
    assert by_model["detailed"].cached_tokens == 0
    ledger.close()
