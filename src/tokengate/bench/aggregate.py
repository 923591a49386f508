"""From request rows to the numbers a run reports: latency summaries and throughput scalars (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel

from tokengate.bench.records import RequestRecord
from tokengate.bench.stats import Summary, summarize

LATENCY_METRICS = ("ttft_ms", "tpot_ms", "itl_ms", "e2e_ms")


class Slo(BaseModel):
    """A request is "good" when it succeeded and meets every bound that is set (none set: every success)."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        if not record.ok:
            return False
        if self.ttft_ms is not None and (record.ttft_ms is None or record.ttft_ms > self.ttft_ms):
            return False
        tpot = record.tpot_ms
        return self.tpot_ms is None or tpot is None or tpot <= self.tpot_ms


def successful(records: Iterable[RequestRecord]) -> list[RequestRecord]:
    return [r for r in records if r.ok]


def latency_values(records: Sequence[RequestRecord], metric: str) -> list[float]:
    """The values of one latency metric over successful requests (`itl_ms` flattens every gap)."""
    ok = successful(records)
    if metric == "itl_ms":
        return [gap for r in ok for gap in r.itl_ms]
    values = (getattr(r, metric) for r in ok)
    return [v for v in values if v is not None]


def latency_summaries(records: Sequence[RequestRecord], *, prefix: str = "", suffix: str = "") -> dict[str, Summary]:
    """ttft/tpot/itl/e2e summaries; `suffix` such as "[turn=2]" names a subset."""
    return {f"{prefix}{metric}{suffix}": summarize(latency_values(records, metric)) for metric in LATENCY_METRICS}


def throughput_scalars(records: Sequence[RequestRecord], duration_s: float, slo: Slo | None = None) -> dict[str, float]:
    """Counts and rates over the measured window (`duration_s`: first request sent to last one finished)."""
    ok = successful(records)
    slo = slo or Slo()
    good = sum(1 for r in ok if slo.met_by(r))
    per_second = (lambda x: x / duration_s) if duration_s > 0 else (lambda x: 0.0)
    output_tokens = sum(r.completion_tokens for r in ok)
    prompt_tokens = sum(r.prompt_tokens for r in ok)
    scalars = {
        "completed_requests": float(len(ok)),
        "failed_requests": float(len(records) - len(ok)),
        "duration_s": duration_s,
        "requests_per_second": per_second(len(ok)),
        "output_tokens_per_second": per_second(output_tokens),
        "total_tokens_per_second": per_second(output_tokens + prompt_tokens),
        "goodput_per_second": per_second(good),
        "goodput_fraction": good / len(records) if records else 0.0,
        "prompt_tokens": float(prompt_tokens),
        "output_tokens": float(output_tokens),
    }
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    if cached:
        scalars["cached_tokens"] = float(sum(cached))
    return scalars


def measured_window(records: Sequence[RequestRecord]) -> float:
    """Seconds from the first request sent to the last one finished."""
    if not records:
        return 0.0
    start = min(r.started_at for r in records)
    end = max(r.started_at + r.e2e_ms / 1000 for r in records)
    return max(0.0, end - start)
