"""`bench report RUN.json… --html OUT`: one self-contained HTML page (figures embedded as PNG data URIs,
no external assets) and the same figures as PNG files next to it. Reads saved runs only."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from tokengate.bench.plots import PLOTS, LabelledRun
from tokengate.bench.prefix_cache import PrefixCacheAnalysis, analyze_prefix_cache
from tokengate.bench.run import BenchRun
from tokengate.bench.stats import Summary
from tokengate.errors import InvalidInputError

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.note { color: #a15c00; }
pre { background: #f7f7f7; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
"""


class Report(BaseModel):
    html: Path
    images: list[Path]


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}" if abs(value) < 1e6 else f"{value:.3g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _summary_rows(summaries: dict[str, Summary]) -> list[list[str]]:
    return [
        [
            name,
            str(s.n),
            _fmt(s.median),
            f"{_fmt(s.ci_low)} – {_fmt(s.ci_high)}",
            _fmt(s.p90),
            _fmt(s.p99),
            _fmt(s.mean),
        ]
        for name, s in summaries.items()
        if s.n
    ]


def _summaries_table(summaries: dict[str, Summary]) -> str:
    return _table(["metric", "n", "median", "95% CI of median", "p90", "p99", "mean"], _summary_rows(summaries))


def _scalars_table(scalars: dict[str, float]) -> str:
    return _table(["figure", "value"], [[k, _fmt(v, 3)] for k, v in scalars.items()])


def _server_table(run: BenchRun) -> str:
    if run.server is None:
        return '<p class="note">No engine /metrics were reachable: no server counters.</p>'
    rows = [[k, "–" if v is None else str(round(v, 4) if isinstance(v, float) else v)]
            for k, v in run.server.model_dump().items()]  # fmt: skip
    return _table(["server counter (delta or peak)", "value"], rows)


def _prefix_cache_section(analysis: PrefixCacheAnalysis) -> str:
    rows = [
        [
            str(row.prompt_tokens), _fmt(row.measured_prompt_tokens, 0),
            f"{_fmt(row.comparison.a.median)} ({_fmt(row.comparison.a.ci_low)} – {_fmt(row.comparison.a.ci_high)})",
            f"{_fmt(row.comparison.b.median)} ({_fmt(row.comparison.b.ci_low)} – {_fmt(row.comparison.b.ci_high)})",
            f"×{_fmt(row.speedup, 2)} ({_fmt(row.speedup_ci_low, 2)} – {_fmt(row.speedup_ci_high, 2)})",
            {"B faster": "hit faster", "A faster": "miss faster"}.get(row.comparison.verdict, row.comparison.verdict),
        ]
        for row in analysis.lengths
    ]  # fmt: skip
    rate = f"{_fmt(_percent(analysis.achieved_hit_rate))}% achieved (engine counters) vs "
    rate += f"{_fmt(_percent(analysis.theoretical_hit_rate))}% theoretical (block size {analysis.block_size})"
    notes = "".join(f'<p class="note">{html.escape(n)}</p>' for n in analysis.notes)
    headers = ["prompt tokens", "measured", "TTFT miss ms (95% CI)", "TTFT hit ms (95% CI)", "speedup", "verdict"]
    return f"<h3>Prefix cache</h3>{_table(headers, rows)}<p>Hit rate: {html.escape(rate)}</p>{notes}"


def _percent(value: float | None) -> float | None:
    return None if value is None else value * 100


def _levels_section(run: BenchRun) -> str:
    rows = []
    for level in run.levels:
        ttft = level.summaries.get("ttft_ms", Summary(n=0))
        tpot = level.summaries.get("tpot_ms", Summary(n=0))
        scalars = level.scalars
        rows.append([
            level.label, _fmt(scalars.get("completed_requests"), 0), _fmt(scalars.get("requests_per_second"), 2),
            _fmt(scalars.get("output_tokens_per_second")), _fmt(scalars.get("goodput_per_second"), 2),
            _fmt(ttft.p50), _fmt(ttft.p90), _fmt(ttft.p99), _fmt(tpot.p50), _fmt(tpot.p90),
        ])  # fmt: skip
    headers = ["level", "done", "req/s", "out tok/s", "goodput/s", "TTFT p50", "p90", "p99", "TPOT p50", "p90"]
    return f"<h3>Levels</h3>{_table(headers, rows)}"


def _json_block(title: str, value: Any) -> str:
    body = html.escape(json.dumps(value, indent=1))
    return f"<details><summary>{html.escape(title)}</summary><pre>{body}</pre></details>"


def _run_section(label: str, run: BenchRun) -> str:
    started = dt.datetime.fromtimestamp(run.started_at, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    parts = [
        f"<h2>{html.escape(label)}: {html.escape(run.workload)}</h2>",
        f"<p>{html.escape(run.target.model)} at {html.escape(run.target.base_url)}, started {started}, "
        f"{len(run.requests)} requests{', <b>interrupted</b>' if run.interrupted else ''}.</p>",
    ]
    if run.workload == "prefix-cache":
        parts.append(_prefix_cache_section(analyze_prefix_cache(run)))
    if run.levels:
        parts.append(_levels_section(run))
    parts += ["<h3>Latency (ms)</h3>", _summaries_table(run.summaries), "<h3>Figures</h3>", _scalars_table(run.scalars)]
    parts += ["<h3>Engine</h3>", _server_table(run)]
    parts += [_json_block("workload config", run.config), _json_block("engine config", run.engine_config)]
    parts.append(_json_block("environment", run.environment))
    return "\n".join(parts)


def write_report(runs: Sequence[LabelledRun], html_path: str | Path) -> Report:
    """Draw every figure that applies, write them as PNGs next to `html_path`, and the page embedding them."""
    if not runs:
        raise InvalidInputError("bench report needs at least one results file")
    out = Path(html_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    images = []
    for name, plot in PLOTS.items():
        image = plot(runs, out.with_name(f"{out.stem}.{name}.png"))
        if image is not None:
            images.append(image)
    figures = "\n".join(
        f'<img alt="{html.escape(i.stem)}" src="data:image/png;base64,{base64.b64encode(i.read_bytes()).decode()}">'
        for i in images
    )
    sections = "\n<hr>\n".join(_run_section(label, run) for label, run in runs)
    title = "Tokengate bench: " + ", ".join(label for label, _ in runs)
    out.write_text(
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{figures}\n{sections}\n</body></html>\n"
    )
    return Report(html=out, images=images)
