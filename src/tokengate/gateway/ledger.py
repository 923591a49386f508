"""The usage ledger: one row per gateway request, in the `usage` table of `<state_dir>/gateway.sqlite3`.

`Ledger.record` only appends to an in-memory queue; a background thread writes the queue in one transaction
every `flush_interval` seconds, or sooner once `max_batch` rows wait. `close()` writes everything left.

What a crash can lose: a SIGKILL (or power loss, or an interpreter exit without `close()`) loses exactly the
rows recorded since the last flush, i.e. at most `flush_interval` seconds of requests (1 s by default).
Flushed rows are committed SQLite transactions and survive. Quota totals are rebuilt from the table on the
next start, so lost rows are also missing from the day's token counts.

`tokens_used_since` answers quota checks from an in-memory running total per key for the current UTC day,
seeded from the table when the ledger opens. Rows written by another process after that are not counted,
so one gateway process should own a database.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from tokengate.errors import InvalidInputError
from tokengate.gateway.keys import connect, open_database

DAY_SECONDS = 86_400
GroupBy = Literal["key", "model"]
_GROUP_COLUMNS: dict[str, str] = {"key": "key_name", "model": "model"}
_FIELDS = (
    "time", "key_name", "model", "deployment", "prompt_tokens", "cached_tokens",
    "completion_tokens", "status", "latency_ms", "ttft_ms",
)  # fmt: skip
_SCHEMA = """
CREATE TABLE IF NOT EXISTS usage (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    key_name TEXT,
    model TEXT NOT NULL,
    deployment TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    cached_tokens INTEGER,
    completion_tokens INTEGER NOT NULL,
    status INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL
);
CREATE INDEX IF NOT EXISTS usage_time ON usage (time);
"""
_log = logging.getLogger(__name__)


class UsageRow(BaseModel):
    time: float
    key_name: str | None
    model: str
    deployment: str
    prompt_tokens: int
    cached_tokens: int | None = None
    completion_tokens: int
    status: int
    latency_ms: float
    ttft_ms: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class UsageSummary(BaseModel):
    group: str | None
    requests: int
    prompt_tokens: int
    cached_tokens: int | None  # None: the engine reported no cached counts (vLLM: --enable-prompt-tokens-details)
    completion_tokens: int
    errors: int
    p50_latency_ms: float


def utc_day_start(epoch: float) -> float:
    """Start of the UTC day holding `epoch`; pass this as `since` to get the cheap quota total."""
    return epoch - epoch % DAY_SECONDS


class Ledger:
    def __init__(
        self,
        path: Path,
        flush_interval: float = 1.0,
        max_batch: int = 500,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if flush_interval <= 0 or max_batch < 1:
            raise InvalidInputError("ledger: flush_interval must be > 0 and max_batch at least 1")
        self.path = path
        self.flush_interval = flush_interval
        self.max_batch = max_batch
        self._clock = clock
        self._lock = threading.Lock()  # guards the queue and the totals; never held during disk I/O
        self._write_lock = threading.Lock()  # one writer at a time; held while rows are between queue and disk
        self._pending: list[UsageRow] = []
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        # Dropping the ledger without close() stops its thread and drops the queue, as a crash would.
        weakref.finalize(self, _stop_worker, self._stop, self._wake).atexit = False
        open_database(path, _SCHEMA)
        self._day_start = utc_day_start(clock())
        self._day_totals = self._totals_since(self._day_start)

    def record(self, row: UsageRow) -> None:
        """Queue a row; O(1), never touches the disk."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the ledger is closed")
            self._pending.append(row)
            self._count(row)
            full = len(self._pending) >= self.max_batch
            if self._thread is None:
                self._thread = _start_worker(self)
        if full:
            self._wake.set()

    def flush(self) -> None:
        """Write every queued row now, in one transaction; on failure the rows go back to the queue."""
        with self._write_lock:
            with self._lock:
                rows, self._pending = self._pending, []
            if not rows:
                return
            try:
                with connect(self.path) as connection:
                    connection.executemany(
                        f"INSERT INTO usage ({', '.join(_FIELDS)}) VALUES ({', '.join('?' * len(_FIELDS))})",
                        [tuple(getattr(row, field) for field in _FIELDS) for row in rows],
                    )
            except BaseException:
                with self._lock:
                    self._pending[:0] = rows
                raise

    def close(self) -> None:
        """Stop the writer thread and flush; safe to call twice."""
        with self._lock:
            self._closed = True
            thread = self._thread
        _stop_worker(self._stop, self._wake)
        if thread is not None:
            thread.join()
        self.flush()

    def tokens_used_since(self, key_name: str | None, since: float) -> int:
        """Prompt + completion tokens of `key_name` from `since` on, written or still queued.

        Cheap (no disk) when `since` is the start of the current UTC day (`utc_day_start(time.time())`),
        which is what a daily quota asks; any other window reads the table.
        """
        with self._lock:
            self._roll_over(self._clock())
            if since == self._day_start:
                return self._day_totals.get(key_name, 0)
        with self._write_lock:  # no rows in flight, so nothing is counted twice or missed
            written = self._written_since(key_name, since)
            with self._lock:
                queued = sum(r.tokens for r in self._pending if r.key_name == key_name and r.time >= since)
        return written + queued

    def usage(self, by: GroupBy = "key", since: float | None = None) -> list[UsageSummary]:
        """Totals per key or per model, busiest first; flushes first so queued rows count."""
        column = _GROUP_COLUMNS.get(by)
        if column is None:
            raise InvalidInputError(f"usage by {by!r}: choose key or model")
        self.flush()
        where, parameters = ("WHERE time >= ?", (since,)) if since is not None else ("WHERE 1", ())
        with connect(self.path) as connection:
            groups = connection.execute(
                f"SELECT {column}, COUNT(*), SUM(prompt_tokens), SUM(cached_tokens), "
                f"SUM(completion_tokens), SUM(status >= 400) FROM usage {where} GROUP BY {column} "
                f"ORDER BY SUM(prompt_tokens + completion_tokens) DESC, {column}",
                parameters,
            ).fetchall()
            return [
                UsageSummary(
                    group=group, requests=requests, prompt_tokens=prompt, cached_tokens=cached,
                    completion_tokens=completion, errors=errors,
                    p50_latency_ms=_median_latency(
                        connection, f"{where} AND {column} IS ?", (*parameters, group), requests
                    ),
                )
                for group, requests, prompt, cached, completion, errors in groups
            ]  # fmt: skip

    def _count(self, row: UsageRow) -> None:
        self._roll_over(row.time)
        if row.time >= self._day_start:
            self._day_totals[row.key_name] = self._day_totals.get(row.key_name, 0) + row.tokens

    def _roll_over(self, now: float) -> None:
        if now >= self._day_start + DAY_SECONDS:
            self._day_start = utc_day_start(now)
            self._day_totals = {}

    def _totals_since(self, since: float) -> dict[str | None, int]:
        with connect(self.path) as connection:
            rows = connection.execute(
                "SELECT key_name, SUM(prompt_tokens + completion_tokens) FROM usage WHERE time >= ? GROUP BY key_name",
                (since,),
            ).fetchall()
        return {name: int(total) for name, total in rows}

    def _written_since(self, key_name: str | None, since: float) -> int:
        with connect(self.path) as connection:
            (total,) = connection.execute(
                "SELECT COALESCE(SUM(prompt_tokens + completion_tokens), 0) FROM usage "
                "WHERE time >= ? AND key_name IS ?",
                (since, key_name),
            ).fetchone()
        return int(total)

    def _flush_in_background(self) -> None:
        try:
            self.flush()
        except Exception:
            _log.exception("usage ledger: writing to %s failed; the rows stay queued for the next flush", self.path)


def _median_latency(connection: sqlite3.Connection, where: str, parameters: tuple[object, ...], count: int) -> float:
    """The median without loading the group's rows: the middle one or two latencies, by offset."""
    rows = connection.execute(
        f"SELECT latency_ms FROM usage {where} ORDER BY latency_ms LIMIT ? OFFSET ?",
        (*parameters, 2 - count % 2, (count - 1) // 2),
    ).fetchall()
    return sum(latency for (latency,) in rows) / len(rows)


def _start_worker(ledger: Ledger) -> threading.Thread:
    """The thread holds only a weak reference, so an abandoned ledger can be collected (and its rows lost)."""
    reference = weakref.ref(ledger)
    stop, wake, interval = ledger._stop, ledger._wake, ledger.flush_interval
    thread = threading.Thread(
        target=_work, args=(reference, stop, wake, interval), name="tokengate-ledger", daemon=True
    )
    thread.start()
    return thread


def _work(reference: weakref.ref[Ledger], stop: threading.Event, wake: threading.Event, interval: float) -> None:
    while not stop.is_set():
        wake.wait(interval)
        wake.clear()
        if stop.is_set():
            return
        ledger = reference()
        if ledger is None:
            return
        ledger._flush_in_background()
        del ledger


def _stop_worker(stop: threading.Event, wake: threading.Event) -> None:
    stop.set()
    wake.set()
