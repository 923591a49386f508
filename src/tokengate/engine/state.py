"""What `up` left running, on disk, so a later `status` or `down` finds it even after a crash or reboot."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from pydantic import BaseModel

from tokengate.processes import group_alive, process_start_ticks


class EngineRecord(BaseModel):
    name: str
    pgid: int
    start_ticks: int | None  # distinguishes our process from a later one that reused the pid
    url: str
    log_path: Path
    argv: list[str]
    started_at: float
    compose_file: Path | None = None  # set for `runtime: docker`; `down` runs `docker compose down` on it

    @property
    def uptime_seconds(self) -> float:
        return time.time() - self.started_at


class StateDir:
    """`<state_dir>/engines/NAME.json` per running engine, `<state_dir>/logs/NAME.log` per engine log."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def engines(self) -> Path:
        return self.root / "engines"

    def log_path(self, name: str) -> Path:
        return self.root / "logs" / f"{name}.log"

    def save(self, record: EngineRecord) -> None:
        self.engines.mkdir(parents=True, exist_ok=True)
        target = self.engines / f"{record.name}.json"
        partial = target.with_suffix(".json.partial")
        partial.write_text(record.model_dump_json(indent=2))
        os.replace(partial, target)  # never a half-written record, even if we are killed here

    def load(self, name: str) -> EngineRecord | None:
        path = self.engines / f"{name}.json"
        try:
            return EngineRecord.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None

    def records(self) -> list[EngineRecord]:
        if not self.engines.is_dir():
            return []
        return [r for p in sorted(self.engines.glob("*.json")) if (r := self.load(p.stem)) is not None]

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.engines / f"{name}.json").unlink()


def is_running(record: EngineRecord) -> bool:
    """The recorded group still has a live member, and its leader (if alive) is the process we started."""
    if record.compose_file is not None:
        return True  # docker owns the process; health tells the rest
    if not group_alive(record.pgid):
        return False
    ticks = process_start_ticks(record.pgid)
    return ticks is None or record.start_ticks is None or ticks == record.start_ticks
