from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tokengate.cli import keys as keys_cli
from tokengate.errors import InvalidInputError
from tokengate.gateway.keys import KeyStore, allows

runner = CliRunner()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_created_key_verifies_and_only_its_hash_is_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    store = KeyStore(path)
    key, record = store.create("alice", models=["qwen3"], tokens_per_day=1000, max_concurrent=2)
    assert key.startswith("tg-")
    assert len(key) == 43
    assert record.prefix == key[:8]
    verified = store.verify(key)
    assert verified is not None
    assert verified.name == "alice"
    assert verified.tokens_per_day == 1000
    assert store.verify(key + "x") is None
    on_disk = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert key.encode() not in on_disk
    assert key[8:].encode() not in on_disk


def test_keys_are_random(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3")
    first, _ = store.create("a")
    second, _ = store.create("b")
    assert first != second


def test_revoke_takes_effect_at_once_with_no_cache(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3", cache_seconds=0)
    key, _ = store.create("alice")
    assert store.verify(key) is not None
    revoked = store.revoke("alice")
    assert revoked.revoked_at is not None
    assert store.verify(key) is None
    assert store.list()[0].revoked_at == revoked.revoked_at


def test_revoke_from_another_process_takes_effect_when_the_cache_expires(tmp_path: Path) -> None:
    path = tmp_path / "gateway.sqlite3"
    clock = FakeClock()
    gateway = KeyStore(path, cache_seconds=2.0, clock=clock)
    key, record = gateway.create("alice")
    assert gateway.verify(key) is not None
    KeyStore(path).revoke(record.prefix)
    clock.now += 1.0
    assert gateway.verify(key) is not None  # still cached
    clock.now += 1.5
    assert gateway.verify(key) is None


def test_revoke_in_the_same_store_clears_its_cache(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3", cache_seconds=60, clock=FakeClock())
    key, _ = store.create("alice")
    assert store.verify(key) is not None
    store.revoke("alice")
    assert store.verify(key) is None


def test_revoke_unknown_names_the_known_keys(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3")
    store.create("alice")
    store.create("bob")
    with pytest.raises(InvalidInputError, match="known keys: alice, bob"):
        store.revoke("carol")


def test_duplicate_names_are_rejected_even_after_revocation(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3")
    store.create("alice")
    with pytest.raises(InvalidInputError, match="'alice' already exists"):
        store.create("alice")
    store.revoke("alice")
    with pytest.raises(InvalidInputError, match="already exists"):
        store.create("alice")
    assert [r.name for r in store.list()] == ["alice"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": ""}, "key name"),
        ({"name": "has space"}, "key name"),
        ({"name": "a", "models": [" "]}, "at least one model"),
        ({"name": "a", "max_concurrent": 0}, "max_concurrent"),
        ({"name": "a", "tokens_per_day": -1}, "tokens_per_day"),
    ],
)
def test_bad_input_is_rejected(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        KeyStore(tmp_path / "gateway.sqlite3").create(**kwargs)  # type: ignore[arg-type]


def test_model_allow_list(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "gateway.sqlite3")
    _, everything = store.create("all")
    _, some = store.create("some", models=["qwen3", "devstral"])
    assert allows(everything, "anything")
    assert allows(some, "qwen3")
    assert allows(some, "devstral")
    assert not allows(some, "qwen3-large")
    assert not allows(some, "*x")


def _fleet(tmp_path: Path) -> Path:
    fleet = tmp_path / "fleet.yaml"
    fleet.write_text("deployments:\n  - {name: a, model: Qwen/Qwen3-8B, port: 8001}\n")
    return fleet


def _app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(keys_cli.app, name="keys")
    return app


def test_cli_prints_the_key_once_and_list_shows_only_the_prefix(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    created = runner.invoke(_app(), ["keys", "create", "--name", "alice", "--models", "a,b", "--fleet", str(fleet)])
    assert created.exit_code == 0, created.output
    (key,) = [line for line in created.stdout.splitlines() if line.startswith("tg-")]
    assert created.output.count(key) == 1
    assert "cannot be shown again" in created.stderr
    assert (tmp_path / ".tokengate" / "gateway.sqlite3").is_file()

    listed = runner.invoke(_app(), ["keys", "list", "--fleet", str(fleet)])
    assert listed.exit_code == 0, listed.output
    assert key[:8] in listed.output
    assert key not in listed.output
    assert "alice" in listed.output

    records = json.loads(runner.invoke(_app(), ["keys", "list", "--fleet", str(fleet), "--json"]).stdout)
    assert [(r["name"], r["models"], r["prefix"]) for r in records] == [("alice", ["a", "b"], key[:8])]
    assert "key" not in records[0]
    assert KeyStore(tmp_path / ".tokengate" / "gateway.sqlite3").verify(key) is not None


def test_cli_create_json_and_revoke(tmp_path: Path) -> None:
    fleet = _fleet(tmp_path)
    created = runner.invoke(
        _app(), ["keys", "create", "--name", "bob", "--tokens-per-day", "500", "--fleet", str(fleet), "--json"]
    )
    assert created.exit_code == 0, created.output
    document = json.loads(created.stdout)
    assert document["key"].startswith(document["prefix"])
    assert document["tokens_per_day"] == 500
    assert document["models"] == ["*"]

    revoked = runner.invoke(_app(), ["keys", "revoke", "bob", "--fleet", str(fleet)])
    assert revoked.exit_code == 0, revoked.output
    assert "Revoked bob" in revoked.output
    store = KeyStore(tmp_path / ".tokengate" / "gateway.sqlite3", cache_seconds=0)
    assert store.verify(document["key"]) is None


def test_cli_duplicate_name_exits_2_through_the_root_command(tmp_path: Path) -> None:
    from tokengate.cli.main import TokengateGroup

    app = typer.Typer(cls=TokengateGroup)
    app.add_typer(keys_cli.app, name="keys")
    fleet = _fleet(tmp_path)
    assert runner.invoke(app, ["keys", "create", "--name", "a", "--fleet", str(fleet)]).exit_code == 0
    again = runner.invoke(app, ["keys", "create", "--name", "a", "--fleet", str(fleet)])
    assert again.exit_code == 2
    assert "already exists" in again.output
