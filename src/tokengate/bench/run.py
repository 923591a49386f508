"""One benchmark run as data: what ran, against what, every request, the summaries and the engine's deltas.

Saved as one JSON file per run (`schema_version` says how to read it); reports and comparisons re-render
from saved files without rerunning anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from tokengate.bench.records import RequestRecord
from tokengate.bench.server_metrics import ServerDeltas
from tokengate.bench.stats import Summary
from tokengate.bench.target import BenchTarget
from tokengate.errors import InvalidInputError

SCHEMA_VERSION = 1


class SweepLevel(BaseModel):
    """One load level of a sweep: a fixed concurrency or a Poisson request rate (requests/s)."""

    index: int
    concurrency: int | None = None
    rate: float | None = None
    started_at: float
    ended_at: float
    summaries: dict[str, Summary]
    scalars: dict[str, float]
    server: ServerDeltas | None = None

    @property
    def label(self) -> str:
        return f"concurrency {self.concurrency}" if self.concurrency is not None else f"{self.rate:g} req/s"


class BenchRun(BaseModel):
    """A finished (or interrupted) run. `summaries` keys: "ttft_ms", "tpot_ms", "itl_ms", "e2e_ms", plus the
    workload's own (e.g. "ttft_miss_ms", "ttft_ms[turn=3]"). `scalars` keys include "requests_per_second",
    "output_tokens_per_second", "goodput_per_second", "completed_requests", "failed_requests", "duration_s"."""

    schema_version: int = SCHEMA_VERSION
    workload: str
    target: BenchTarget
    config: dict[str, Any]
    engine_config: dict[str, Any] | None = None
    started_at: float
    ended_at: float
    interrupted: bool = False
    requests: list[RequestRecord]
    summaries: dict[str, Summary]
    scalars: dict[str, float]
    server: ServerDeltas | None = None
    levels: list[SweepLevel] = []  # sweep only: one entry per concurrency or rate
    environment: dict[str, Any] = {}

    def save(self, path: str | Path) -> Path:
        """Write the run as JSON (the API key is never written); returns the path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(self.model_dump_json(indent=1) + "\n")
        return target

    @classmethod
    def load(cls, path: str | Path) -> BenchRun:
        """Read a results file; a clear error for a missing file, bad JSON or a newer schema."""
        source = Path(path)
        try:
            document = json.loads(source.read_text())
        except FileNotFoundError:
            raise InvalidInputError(
                f"{source}: no such results file (write one with `tokengate bench … --out`)"
            ) from None
        except json.JSONDecodeError as exc:
            raise InvalidInputError(f"{source}: not JSON ({exc})") from None
        version = document.get("schema_version") if isinstance(document, dict) else None
        if version != SCHEMA_VERSION:
            raise InvalidInputError(
                f"{source}: schema_version {version!r}, this tokengate reads {SCHEMA_VERSION}; "
                "is it a `tokengate bench` results file?"
            )
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise InvalidInputError(f"{source}: field {where}: {first['msg']}") from None
