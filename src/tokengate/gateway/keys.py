"""API keys the gateway issues: created once, stored as hashes in `<state_dir>/gateway.sqlite3`.

The plaintext key is returned by `KeyStore.create` and never stored. `verify` is called from the gateway's
event loop for every request, so verified keys are cached in memory for `cache_seconds`; a key revoked by
another process (`tokengate keys revoke`) stops working once that cache entry expires.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from pydantic import BaseModel

from tokengate.errors import InvalidInputError

DATABASE_FILE = "gateway.sqlite3"
KEY_PREFIX = "tg-"
DISPLAY_PREFIX_LENGTH = 8
# Well under the 5 s within which a revocation made elsewhere must take effect.
CACHE_SECONDS = 2.0
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    prefix TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    models TEXT NOT NULL,
    tokens_per_day INTEGER,
    max_concurrent INTEGER,
    created_at REAL NOT NULL,
    revoked_at REAL
)
"""
_COLUMNS = "id, name, prefix, models, tokens_per_day, max_concurrent, created_at, revoked_at"


class KeyRecord(BaseModel):
    id: str
    name: str
    prefix: str
    models: list[str]
    tokens_per_day: int | None = None
    max_concurrent: int | None = None
    created_at: float
    revoked_at: float | None = None


def allows(record: KeyRecord, model: str) -> bool:
    return "*" in record.models or model in record.models


def key_hash(plaintext: str) -> str:
    # Keys are 240 random bits, so a fast unsalted hash is enough: there is nothing to brute-force.
    return hashlib.sha256(plaintext.encode()).hexdigest()


@contextmanager
def connect(path: Path) -> Iterator[sqlite3.Connection]:
    """A short-lived connection that commits on success; one per call keeps every store thread-safe."""
    with closing(sqlite3.connect(path, timeout=5.0)) as connection, connection:
        yield connection


def open_database(path: Path, schema: str) -> None:
    """Create the file (WAL mode, shared by the key store and the ledger) and the tables it lacks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with connect(path) as connection:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.executescript(schema)


class KeyStore:
    def __init__(
        self, path: Path, cache_seconds: float = CACHE_SECONDS, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path = path
        self._cache_seconds = cache_seconds
        self._clock = clock
        self._cache: dict[str, tuple[KeyRecord, float]] = {}
        self._lock = threading.Lock()
        open_database(path, _SCHEMA)

    def create(
        self,
        name: str,
        models: list[str] | None = None,
        tokens_per_day: int | None = None,
        max_concurrent: int | None = None,
    ) -> tuple[str, KeyRecord]:
        """Returns the plaintext key, which exists nowhere else afterwards, and its record."""
        models = _check_models(["*"] if models is None else models)
        _check_limits(name, tokens_per_day, max_concurrent)
        plaintext = KEY_PREFIX + secrets.token_urlsafe(30)  # 30 bytes -> 40 url-safe characters
        record = KeyRecord(
            id=uuid.uuid4().hex, name=name, prefix=plaintext[:DISPLAY_PREFIX_LENGTH], models=models,
            tokens_per_day=tokens_per_day, max_concurrent=max_concurrent, created_at=time.time(),
        )  # fmt: skip
        try:
            with connect(self.path) as connection:
                connection.execute(
                    f"INSERT INTO api_keys ({_COLUMNS}, key_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (*_row(record), key_hash(plaintext)),
                )
        except sqlite3.IntegrityError:
            raise InvalidInputError(
                f"a key named {name!r} already exists (names stay taken after revocation); choose another name"
            ) from None
        return plaintext, record

    def verify(self, plaintext: str) -> KeyRecord | None:
        """The active key's record, or None for an unknown or revoked key."""
        digest = key_hash(plaintext)
        now = self._clock()
        with self._lock:
            cached = self._cache.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        with connect(self.path) as connection:
            row = connection.execute(
                f"SELECT {_COLUMNS} FROM api_keys WHERE key_hash = ? AND revoked_at IS NULL", (digest,)
            ).fetchone()
        with self._lock:
            if row is None:
                self._cache.pop(digest, None)
                return None
            record = _record(row)
            self._cache[digest] = (record, now + self._cache_seconds)
        return record

    def revoke(self, name_or_prefix: str) -> KeyRecord:
        """Revoke by exact name or by displayed prefix; revoking a revoked key changes nothing."""
        records = self.list()
        matches = [r for r in records if r.name == name_or_prefix] or [r for r in records if r.prefix == name_or_prefix]
        if not matches:
            known = ", ".join(r.name for r in records) or "none yet"
            raise InvalidInputError(f"no key named or prefixed {name_or_prefix!r}; known keys: {known}")
        if len(matches) > 1:
            names = ", ".join(r.name for r in matches)
            raise InvalidInputError(f"prefix {name_or_prefix!r} matches several keys ({names}); revoke by name")
        (record,) = matches
        if record.revoked_at is not None:
            return record
        revoked = record.model_copy(update={"revoked_at": time.time()})
        with connect(self.path) as connection:
            connection.execute("UPDATE api_keys SET revoked_at = ? WHERE id = ?", (revoked.revoked_at, record.id))
        with self._lock:
            self._cache = {digest: entry for digest, entry in self._cache.items() if entry[0].id != record.id}
        return revoked

    def list(self) -> list[KeyRecord]:
        with connect(self.path) as connection:
            rows = connection.execute(f"SELECT {_COLUMNS} FROM api_keys ORDER BY created_at, name").fetchall()
        return [_record(row) for row in rows]


def _check_models(models: list[str]) -> list[str]:
    cleaned = [m.strip() for m in models if m.strip()]
    if not cleaned:
        raise InvalidInputError('models: give at least one model name, or "*" for all models')
    return cleaned


def _check_limits(name: str, tokens_per_day: int | None, max_concurrent: int | None) -> None:
    if not _NAME.match(name):
        raise InvalidInputError(
            f"key name {name!r}: use 1-64 letters, digits, '.', '_', '@' or '-', starting with a letter or digit"
        )
    if tokens_per_day is not None and tokens_per_day < 0:
        raise InvalidInputError(f"tokens_per_day {tokens_per_day}: must be 0 or more")
    if max_concurrent is not None and max_concurrent < 1:
        raise InvalidInputError(f"max_concurrent {max_concurrent}: must be 1 or more")


def _row(record: KeyRecord) -> tuple[object, ...]:
    return (
        record.id, record.name, record.prefix, json.dumps(record.models), record.tokens_per_day,
        record.max_concurrent, record.created_at, record.revoked_at,
    )  # fmt: skip


def _record(row: tuple[object, ...]) -> KeyRecord:
    id_, name, prefix, models, tokens_per_day, max_concurrent, created_at, revoked_at = row
    return KeyRecord.model_validate(
        {
            "id": id_, "name": name, "prefix": prefix, "models": json.loads(str(models)),
            "tokens_per_day": tokens_per_day, "max_concurrent": max_concurrent,
            "created_at": created_at, "revoked_at": revoked_at,
        }
    )  # fmt: skip
