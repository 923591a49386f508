"""Running the gateway for a fleet: keys, ledger and routes from its files, served by uvicorn."""

from __future__ import annotations

import time
from pathlib import Path

import uvicorn
from starlette.applications import Starlette

from tokengate.fleet.loader import state_dir
from tokengate.fleet.schema import Fleet, Gateway
from tokengate.gateway.app import GatewaySettings, create_app
from tokengate.gateway.auth import Identity, KeyLookup, chain, fleet_keys
from tokengate.gateway.keys import KeyStore
from tokengate.gateway.ledger import Ledger, utc_day_start
from tokengate.gateway.routing import build_router


def database_path(fleet: Fleet, fleet_path: Path) -> Path:
    return state_dir(fleet, fleet_path) / "gateway.sqlite3"


def build_gateway_app(fleet: Fleet, fleet_path: Path) -> tuple[Starlette, Ledger]:
    gateway = fleet.gateway or Gateway()
    database = database_path(fleet, fleet_path)
    database.parent.mkdir(parents=True, exist_ok=True)
    store = KeyStore(database)
    ledger = Ledger(database)
    settings = GatewaySettings(
        router=build_router(fleet),
        auth_required=gateway.auth == "keys",
        lookup_key=chain(_store_lookup(store), fleet_keys(gateway)),
        record_usage=ledger.record,
        tokens_used_today=lambda name: ledger.tokens_used_since(name, utc_day_start(time.time())),
        max_body_bytes=gateway.max_body_bytes,
        upstream_idle_timeout=gateway.upstream_idle_timeout,
        # uvicorn re-raises SIGTERM once it has shut down, so the flush must happen in the app's shutdown.
        on_shutdown=ledger.close,
    )
    return create_app(settings), ledger


def _store_lookup(store: KeyStore) -> KeyLookup:
    def lookup(plaintext: str) -> Identity | None:
        record = store.verify(plaintext)
        if record is None:
            return None
        return Identity(
            name=record.name,
            models=tuple(record.models),
            tokens_per_day=record.tokens_per_day,
            max_concurrent=record.max_concurrent,
        )

    return lookup


def serve(fleet: Fleet, fleet_path: Path, *, host: str | None = None, port: int | None = None) -> None:
    """Serve until SIGINT/SIGTERM; the ledger is flushed on the way out."""
    gateway = fleet.gateway or Gateway()
    app, ledger = build_gateway_app(fleet, fleet_path)
    try:
        uvicorn.run(
            app,
            host=host or gateway.host,
            port=port or gateway.port,
            log_level="warning",
            access_log=False,  # keys travel in headers; nothing per request goes to logs
            loop="uvloop",
            http="httptools",
            timeout_graceful_shutdown=10,
        )
    finally:
        ledger.close()
