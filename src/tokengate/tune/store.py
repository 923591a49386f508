"""The results store: one SQLite file per search, every trial written the moment anything about it changes.

`trials` holds one row per configuration (its canonical key is unique), so a
configuration is recorded once however often the search is resumed. A row
still `running` when a search opens was left by a tokengate that died (Ctrl-C
is handled, a SIGKILL or a reboot is not): its engine, found by the recorded
process group and start time, is stopped, and the trial becomes `interrupted`,
to be run again.
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel

from tokengate.errors import InvalidInputError
from tokengate.processes import stop_group
from tokengate.tune.space import SearchSpace
from tokengate.tune.trial import EngineProcess, Phase, TrialRecord, TrialStatus, is_alive

STORE_NAME = "tune.sqlite"
ORPHAN_GRACE_SECONDS = 10.0  # SIGTERM, then SIGKILL: an orphan engine gets this long to shut down cleanly
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS trials (
    number INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    status TEXT NOT NULL,
    record TEXT NOT NULL
);
"""


class Recovered(BaseModel):
    """A trial that was running when the previous tokengate died, and what became of its engine."""

    number: int
    label: str
    engine_was_running: bool


class TuneStore:
    """Trials of one search, in `<state_dir>/tune.sqlite` (WAL, one commit per change)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        with self._transaction() as db:
            db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))

    def trials(self) -> list[TrialRecord]:
        rows = self._db.execute("SELECT record FROM trials ORDER BY number").fetchall()
        return [TrialRecord.model_validate_json(row[0]) for row in rows]

    def trial(self, number: int) -> TrialRecord | None:
        row = self._db.execute("SELECT record FROM trials WHERE number = ?", (number,)).fetchone()
        return None if row is None else TrialRecord.model_validate_json(row[0])

    def by_key(self, key: str) -> TrialRecord | None:
        row = self._db.execute("SELECT record FROM trials WHERE key = ?", (key,)).fetchone()
        return None if row is None else TrialRecord.model_validate_json(row[0])

    def next_number(self) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(number), 0) FROM trials").fetchone()
        return int(row[0]) + 1

    def save(self, record: TrialRecord) -> None:
        with self._transaction() as db:
            db.execute(
                "INSERT INTO trials (number, key, status, record) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(number) DO UPDATE SET key = excluded.key, status = excluded.status, "
                "record = excluded.record",
                (record.number, record.candidate.key, record.status.value, record.model_dump_json()),
            )

    def journal(self, number: int) -> TrialJournalWriter:
        return TrialJournalWriter(self, number)

    def recover(self) -> list[Recovered]:
        """Stop the engines of trials a dead tokengate left running; mark those trials interrupted."""
        recovered = []
        for record in self.trials():
            if record.status is not TrialStatus.RUNNING:
                continue
            running = record.engine is not None and is_alive(record.engine)
            if running and record.engine is not None:
                stop_group(record.engine.pgid, grace_seconds=ORPHAN_GRACE_SECONDS)
            record.status, record.phase = TrialStatus.INTERRUPTED, None
            self.save(record)
            recovered.append(Recovered(number=record.number, label=record.candidate.label, engine_was_running=running))
        return recovered


class TrialJournalWriter:
    """The store side of `trial.TrialJournal`: the engine's group and the phase, committed as they happen."""

    def __init__(self, store: TuneStore, number: int) -> None:
        self._store = store
        self._number = number

    def _update(self, **changes: object) -> None:
        record = self._store.trial(self._number)
        if record is None:
            raise AssertionError(f"trial {self._number} is not in the store")
        self._store.save(record.model_copy(update=changes))

    def engine_started(self, engine: EngineProcess) -> None:
        self._update(engine=engine, phase=Phase.STARTING)

    def phase(self, phase: Phase, detail: str = "") -> None:
        self._update(phase=phase)


def open_store(space: SearchSpace, *, resume: bool) -> TuneStore:
    """The search's store; refuses to mix two searches, or to start over on top of one without --resume."""
    assert space.state_dir is not None
    store = TuneStore(Path(space.state_dir) / STORE_NAME)
    try:
        _claim(store, space, resume=resume)
    except BaseException:
        store.close()
        raise
    return store


def _claim(store: TuneStore, space: SearchSpace, *, resume: bool) -> None:
    fingerprint = store.meta("fingerprint")
    existing = store.trials()
    if fingerprint is None or not existing:
        store.set_meta("fingerprint", space.fingerprint())
        store.set_meta("space", space.model_dump_json())
        store.set_meta("created_at", str(time.time()))
        return
    if fingerprint != space.fingerprint():
        raise InvalidInputError(
            f"{store.path} holds another search (its space file differed: base, parameters, workload, objective, "
            "constraints or repeats); set a new `state_dir:` in the space file, or delete that directory"
        )
    if not resume:
        raise InvalidInputError(
            f"{store.path} already holds {len(existing)} trials of this search; "
            "add --resume to continue it, or delete that directory to start over"
        )
