"""`tokengate bench`: prefix-cache, multiturn and sweep workloads against any OpenAI-compatible URL;
`report` and `compare` re-read saved runs."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from tokengate.bench.compare import RunComparison, compare_runs
from tokengate.bench.multiturn import Distribution, MultiturnConfig, run_multiturn
from tokengate.bench.prefix_cache import PrefixCacheAnalysis, PrefixCacheConfig, analyze_prefix_cache, run_prefix_cache
from tokengate.bench.report import Report, write_report
from tokengate.bench.run import BenchRun
from tokengate.bench.stats import Summary
from tokengate.bench.sweep import SweepConfig, run_sweep
from tokengate.bench.target import BenchTarget
from tokengate.cli.output import console, err_console, print_json
from tokengate.errors import InvalidInputError

app = typer.Typer(
    help="Measure an engine or the gateway: prefix cache, multi-turn agent sessions, load sweeps; reports.",
    no_args_is_help=True,
)

ConfigT = TypeVar("ConfigT", bound=BaseModel)
Url = Annotated[str, typer.Argument(help="Server root, e.g. http://127.0.0.1:8000 (an engine or the gateway).")]
Model = Annotated[str, typer.Option("--model", "-m", help="Model name the server serves.")]
ApiKeyEnv = Annotated[str, typer.Option(help="Environment variable holding the API key, if any.")]
MetricsUrl = Annotated[
    str | None, typer.Option(help="Engine root whose /metrics to scrape (default: URL; set it when URL is a gateway).")
]
Out = Annotated[
    Path | None, typer.Option("--out", help="Results file (default: tokengate-bench/<workload>-<time>.json).")
]
Json = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]
Seed = Annotated[int, typer.Option(help="Seed for prompt texts, sizes and arrivals.")]
Salt = Annotated[str | None, typer.Option(help="Prompt salt (default: fresh per run, so no earlier run can hit).")]
MetricsInterval = Annotated[float, typer.Option(help="Seconds between /metrics polls for peaks (0: before/after).")]
MaxTokens = Annotated[int, typer.Option(help="Tokens to generate per request.")]
SloTtft = Annotated[float | None, typer.Option(help="Goodput: a request is good if its TTFT is at most this (ms).")]
SloTpot = Annotated[float | None, typer.Option(help="Goodput: ... and its time per output token at most this (ms).")]
ExtraBody = Annotated[
    str | None,
    typer.Option(help='JSON merged into every request, e.g. \'{"chat_template_kwargs": {"enable_thinking": false}}\'.'),
]


class BenchResult(BaseModel):
    """What `--json` prints: where the run was saved, the run, and for prefix-cache its analysis."""

    out: str
    run: BenchRun
    prefix_cache: PrefixCacheAnalysis | None = None


def _numbers(text: str, kind: Callable[[str], Any], option: str) -> list[Any]:
    try:
        return [kind(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise InvalidInputError(f"{option} takes comma-separated numbers, e.g. 1,4,8; got {text!r}") from None


def _extra_body(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--extra-body is not JSON ({exc}); quote it: --extra-body '{{\"key\": 1}}'") from None
    if not isinstance(value, dict):
        raise InvalidInputError("--extra-body must be a JSON object, e.g. '{\"temperature\": 0}'")
    return value


def _config(cls: type[ConfigT], **fields: Any) -> ConfigT:
    try:
        return cls(**fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = str(first["loc"][0]) if first["loc"] else ""
        flag = f"--{field.replace('_', '-')}" if field else "the options"
        raise InvalidInputError(f"{flag}: {first['msg'].removeprefix('Value error, ')}") from None


def _target(url: str, model: str, api_key_env: str, metrics_url: str | None) -> BenchTarget:
    if not model:
        raise InvalidInputError("name the model the server serves: --model NAME (see GET /v1/models)")
    return BenchTarget(base_url=url, model=model, api_key=os.environ.get(api_key_env), metrics_url=metrics_url)


@contextlib.contextmanager
def _sigterm_stops(stop: threading.Event) -> Iterator[None]:
    """A SIGTERM (a CI timeout, `kill`) ends the run as Ctrl-C does: what was measured is still written."""
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_with_progress(description: str, quiet: bool, work: Callable[..., BenchRun]) -> BenchRun:
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    stop = threading.Event()
    with _sigterm_stops(stop), Progress(*columns, console=err_console, transient=True, disable=quiet) as progress:
        task = progress.add_task(description, total=None)
        return work(on_progress=lambda done, total: progress.update(task, completed=done, total=total), stop=stop)


def _finish(run: BenchRun, out: Path | None, json_output: bool, render: Callable[[BenchRun], None]) -> None:
    stamp = dt.datetime.fromtimestamp(run.started_at).strftime("%Y%m%d-%H%M%S")
    path = run.save(out or Path("tokengate-bench") / f"{run.workload}-{stamp}.json")
    if json_output:
        analysis = analyze_prefix_cache(run) if run.workload == "prefix-cache" else None
        print_json(BenchResult(out=str(path), run=run, prefix_cache=analysis))
    elif not run.requests:
        console.print(f"no request finished before the run was stopped; saved {path}", highlight=False)
    else:
        render(run)
        _render_server(run)
        console.print(f"saved {path}  (tokengate bench report {path} --html report.html)", highlight=False)
    if run.interrupted:
        err_console.print(f"[yellow]interrupted:[/] kept the {len(run.requests)} requests that finished")
        raise typer.Exit(130)


def _ms(summary: Summary | None, ci: bool = True) -> str:
    if summary is None or summary.median is None:
        return "–"
    if not ci or summary.ci_low is None or summary.ci_high is None:
        return f"{summary.median:.1f}"
    return f"{summary.median:.1f} [{summary.ci_low:.1f}, {summary.ci_high:.1f}]"


def _render_server(run: BenchRun) -> None:
    server = run.server
    if server is None:
        console.print("engine counters: none (no vLLM /metrics at the target; see --metrics-url)", highlight=False)
        return
    parts = []
    if server.prefix_cache_queries is not None:
        rate = f" ({server.hit_rate:.1%})" if server.hit_rate is not None else ""
        parts.append(f"prefix cache {server.prefix_cache_hits:.0f}/{server.prefix_cache_queries:.0f} tokens hit{rate}")
    if server.preemptions is not None:
        parts.append(f"{server.preemptions:.0f} preemptions")
    if server.kv_cache_usage_peak is not None:
        parts.append(f"KV peak {server.kv_cache_usage_peak:.1%}")
    if server.running_peak is not None:
        parts.append(f"running peak {server.running_peak:.0f}, waiting peak {server.waiting_peak or 0:.0f}")
    console.print("engine counters: " + ", ".join(parts), highlight=False)


@app.command("prefix-cache")
def prefix_cache(
    url: Url,
    model: Model = "",
    prompt_tokens: Annotated[
        str, typer.Option(help="Prompt lengths, comma-separated; capped by the engine's max_model_len.")
    ] = "1024,4096,16384",
    prefixes: Annotated[int, typer.Option(help="Distinct prefixes (misses) per length.")] = 4,
    repeats: Annotated[int, typer.Option(help="Repeats (hits) per prefix.")] = 3,
    max_tokens: MaxTokens = 1,
    min_difference: Annotated[
        float, typer.Option(help="Hit/miss differences below this fraction of the miss median: indistinguishable.")
    ] = 0.05,
    seed: Seed = 0,
    salt: Salt = None,
    metrics_url: MetricsUrl = None,
    metrics_interval: MetricsInterval = 1.0,
    extra_body: ExtraBody = None,
    api_key_env: ApiKeyEnv = "TOKENGATE_API_KEY",
    out: Out = None,
    json_output: Json = False,
) -> None:
    """Does prefix caching pay? TTFT of misses vs hits, with CIs and the engine's hit rate.

    Per prompt length: K salted prompts nobody sent before (misses), each followed by R exact repeats (hits),
    one request at a time. Reports median TTFT with bootstrap 95% CIs, the speedup with its CI, a verdict,
    and the hit rate the engine counted against the theoretical one (the repeats' whole KV blocks).

    Example: tokengate bench prefix-cache http://127.0.0.1:8101 -m tiny-qwen3 --prompt-tokens 2048
    """
    config = _config(
        PrefixCacheConfig, prompt_tokens=_numbers(prompt_tokens, int, "--prompt-tokens"), prefixes=prefixes,
        repeats=repeats, max_tokens=max_tokens, min_relative_difference=min_difference, seed=seed, salt=salt,
        metrics_interval_s=metrics_interval, extra_body=_extra_body(extra_body),
    )  # fmt: skip
    target = _target(url, model, api_key_env, metrics_url)
    run = _run_with_progress("prefix cache", json_output, lambda **kw: run_prefix_cache(target, config, **kw))
    _finish(run, out, json_output, _render_prefix_cache)


def _render_prefix_cache(run: BenchRun) -> None:
    analysis = analyze_prefix_cache(run)
    table = Table(title=f"prefix cache: {run.target.model} at {run.target.base_url}")
    for column in ("prompt tokens", "TTFT miss ms [95% CI]", "TTFT hit ms [95% CI]", "speedup [95% CI]", "verdict"):
        table.add_column(column, justify="left" if column == "verdict" else "right")
    for row in analysis.lengths:
        speedup = "–"
        if row.speedup is not None:
            speedup = f"×{row.speedup:.1f}"
            if row.speedup_ci_low is not None and row.speedup_ci_high is not None:
                speedup += f" [{row.speedup_ci_low:.1f}, {row.speedup_ci_high:.1f}]"
        verdict = {"B faster": "hit faster", "A faster": "miss faster"}.get(row.comparison.verdict, "indistinguishable")
        table.add_row(f"{row.measured_prompt_tokens or row.prompt_tokens:.0f}", _ms(row.comparison.a),
                      _ms(row.comparison.b), speedup, verdict)  # fmt: skip
    console.print(table)
    if analysis.theoretical_hit_rate is not None and analysis.achieved_hit_rate is not None:
        counted = f"{analysis.server_hits:.0f} of {analysis.prompt_tokens_sent} prompt tokens served from cache"
        console.print(
            f"hit rate: {analysis.achieved_hit_rate:.1%} achieved (engine counters: {counted}), "
            f"{analysis.theoretical_hit_rate:.1%} theoretical (the repeats' whole {analysis.block_size}-token blocks)",
            highlight=False,
        )
    for note in analysis.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)


@app.command()
def multiturn(
    url: Url,
    model: Model = "",
    sessions: Annotated[int, typer.Option(help="Concurrent agent sessions.")] = 4,
    turns: Annotated[int, typer.Option(help="Requests per session.")] = 4,
    system_prompt_tokens: Annotated[int, typer.Option(help="Shared system prompt size.")] = 512,
    user_tokens: Annotated[int, typer.Option(help="Mean new user message size.")] = 128,
    user_tokens_spread: Annotated[int, typer.Option(help="How far user sizes scatter (see --sizes).")] = 32,
    tool_result_tokens: Annotated[int, typer.Option(help="Mean tool result size.")] = 256,
    tool_result_tokens_spread: Annotated[int, typer.Option(help="How far tool result sizes scatter.")] = 64,
    sizes: Annotated[
        Distribution,
        typer.Option(
            help="Size distribution: uniform (mean ± spread), normal or lognormal (spread = standard "
            "deviation), exponential (mean only)."
        ),
    ] = Distribution.UNIFORM,
    tools: Annotated[bool, typer.Option(help="Send tool definitions and alternate tool-result turns.")] = True,
    think_time: Annotated[float, typer.Option(help="Mean seconds between a reply and the next turn.")] = 0.0,
    think_time_spread: Annotated[float, typer.Option(help="How far think times scatter.")] = 0.0,
    think_times: Annotated[
        Distribution, typer.Option(help="Think-time distribution, as --sizes; exponential: Poisson-like pauses.")
    ] = Distribution.UNIFORM,
    max_tokens: MaxTokens = 32,
    slo_ttft_ms: SloTtft = None,
    slo_tpot_ms: SloTpot = None,
    seed: Seed = 0,
    salt: Salt = None,
    metrics_url: MetricsUrl = None,
    metrics_interval: MetricsInterval = 1.0,
    extra_body: ExtraBody = None,
    api_key_env: ApiKeyEnv = "TOKENGATE_API_KEY",
    out: Out = None,
    json_output: Json = False,
) -> None:
    """Concurrent agent sessions: TTFT and cached tokens by turn, sessions completed, goodput.

    N sessions of T turns over a shared system prompt and tools; each turn appends the reply and a new user
    message or a tool call and its result (sizes drawn around their mean), with think time between turns.

    Example: tokengate bench multiturn http://127.0.0.1:8101 -m tiny-qwen3 --sessions 4 --turns 6
    """
    config = _config(
        MultiturnConfig, sessions=sessions, turns=turns, system_prompt_tokens=system_prompt_tokens,
        user_tokens=user_tokens, user_tokens_spread=user_tokens_spread, tool_result_tokens=tool_result_tokens,
        tool_result_tokens_spread=tool_result_tokens_spread, sizes=sizes, tools=tools, think_time_s=think_time,
        think_time_spread_s=think_time_spread, think_times=think_times, max_tokens=max_tokens,
        slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, seed=seed, salt=salt, metrics_interval_s=metrics_interval,
        extra_body=_extra_body(extra_body),
    )  # fmt: skip
    target = _target(url, model, api_key_env, metrics_url)
    run = _run_with_progress("multiturn", json_output, lambda **kw: run_multiturn(target, config, **kw))
    _finish(run, out, json_output, _render_multiturn)


def _render_multiturn(run: BenchRun) -> None:
    table = Table(title=f"multiturn: {run.target.model} at {run.target.base_url}")
    for column in ("turn", "requests", "TTFT ms [95% CI]", "TTFT p90", "prompt tokens", "cached tokens"):
        table.add_column(column, justify="right")
    turn = 0
    while f"ttft_ms[turn={turn}]" in run.summaries:
        ttft = run.summaries[f"ttft_ms[turn={turn}]"]
        cached = run.summaries.get(f"cached_tokens[turn={turn}]")
        prompt = run.summaries.get(f"prompt_tokens[turn={turn}]")
        table.add_row(str(turn), str(ttft.n), _ms(ttft), _ms(ttft, ci=False) if ttft.p90 is None else f"{ttft.p90:.1f}",
                      _ms(prompt, ci=False), _ms(cached, ci=False))  # fmt: skip
        turn += 1
    console.print(table)
    scalars = run.scalars
    ratio = run.summaries.get("session_cached_ratio")
    cached = f", cached ratio per session {ratio.median:.1%} (median)" if ratio and ratio.median is not None else ""
    console.print(
        f"sessions completed {scalars.get('sessions_completed', 0):.0f}/{scalars.get('sessions', 0):.0f}, "
        f"{scalars['requests_per_second']:.2f} req/s, {scalars['output_tokens_per_second']:.1f} output tok/s, "
        f"goodput {scalars['goodput_per_second']:.2f} req/s ({scalars['goodput_fraction']:.0%}){cached}",
        highlight=False,
    )
    if "cached_tokens[turn=0]" not in run.summaries:
        console.print("note: no per-request cached tokens: start vLLM with --enable-prompt-tokens-details, or run "
                      "one session (the engine's counters then attribute them)", highlight=False)  # fmt: skip


@app.command()
def sweep(
    url: Url,
    model: Model = "",
    concurrency: Annotated[str | None, typer.Option(help="Concurrent clients per level, e.g. 1,2,4,8.")] = None,
    rate: Annotated[str | None, typer.Option(help="Poisson request rates per level (req/s), e.g. 0.5,1,2.")] = None,
    requests: Annotated[int, typer.Option(help="Requests per level.")] = 32,
    prompt_tokens: Annotated[int, typer.Option(help="Prompt size of every request.")] = 256,
    max_tokens: MaxTokens = 32,
    endpoint: Annotated[str, typer.Option(help="chat (/v1/chat/completions) or completions (/v1/completions).")] = (
        "chat"
    ),
    ignore_eos: Annotated[bool, typer.Option(help="vLLM's ignore_eos: generate exactly --max-tokens.")] = True,
    warmup: Annotated[int, typer.Option(help="Requests sent first and not measured.")] = 1,
    slo_ttft_ms: SloTtft = None,
    slo_tpot_ms: SloTpot = None,
    seed: Seed = 0,
    salt: Salt = None,
    metrics_url: MetricsUrl = None,
    metrics_interval: MetricsInterval = 1.0,
    extra_body: ExtraBody = None,
    api_key_env: ApiKeyEnv = "TOKENGATE_API_KEY",
    out: Out = None,
    json_output: Json = False,
) -> None:
    """Load levels: TTFT, TPOT, ITL, E2E percentiles and throughput per concurrency or request rate.

    Levels run one after another: a fixed number of concurrent clients, or Poisson arrivals at a rate. Every
    prompt is unique and about --prompt-tokens long; with --ignore-eos every request generates --max-tokens.
    Also goodput under --slo-ttft-ms/--slo-tpot-ms and the engine's KV and queue peaks per level.

    Example: tokengate bench sweep http://127.0.0.1:8101 -m tiny-qwen3 --concurrency 1,4,8 --requests 40
    """
    config = _config(
        SweepConfig, concurrency=_numbers(concurrency, int, "--concurrency") if concurrency else None,
        rates=_numbers(rate, float, "--rate") if rate else None, requests_per_level=requests,
        prompt_tokens=prompt_tokens, max_tokens=max_tokens, endpoint=endpoint, ignore_eos=ignore_eos,
        warmup_requests=warmup, slo_ttft_ms=slo_ttft_ms, slo_tpot_ms=slo_tpot_ms, seed=seed, salt=salt,
        metrics_interval_s=metrics_interval, extra_body=_extra_body(extra_body),
    )  # fmt: skip
    target = _target(url, model, api_key_env, metrics_url)
    run = _run_with_progress("sweep", json_output, lambda **kw: run_sweep(target, config, **kw))
    _finish(run, out, json_output, _render_sweep)


def _render_sweep(run: BenchRun) -> None:
    slo = run.config.get("slo_ttft_ms") is not None or run.config.get("slo_tpot_ms") is not None
    table = Table(title=f"sweep: {run.target.model} at {run.target.base_url}")
    columns = ["level", "ok/failed", "req/s", "out tok/s", "TTFT ms p50/90/99", "TPOT ms p50/90/99", "E2E ms p50/99"]
    for column in [*columns, "KV peak", *(["goodput/s"] if slo else [])]:
        table.add_column(column, justify="left" if column == "level" else "right", no_wrap=column == "level")
    for level in run.levels:
        s, m = level.scalars, level.summaries
        server = level.server
        cells = [
            level.label, f"{s.get('completed_requests', 0):.0f}/{s.get('failed_requests', 0):.0f}",
            f"{s.get('requests_per_second', 0):.2f}", f"{s.get('output_tokens_per_second', 0):.0f}",
            _percentiles(m.get("ttft_ms")), _percentiles(m.get("tpot_ms")),
            _percentiles(m.get("e2e_ms"), ("p50", "p99")),
            f"{server.kv_cache_usage_peak:.1%}" if server and server.kv_cache_usage_peak is not None else "–",
        ]  # fmt: skip
        table.add_row(*cells, *([f"{s.get('goodput_per_second', 0):.2f}"] if slo else []))
    console.print(table)


def _percentiles(summary: Summary | None, names: tuple[str, ...] = ("p50", "p90", "p99")) -> str:
    if summary is None or not summary.n:
        return "–"
    return "/".join(_short(getattr(summary, name)) for name in names)


def _short(value: float) -> str:
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _load(paths: list[Path]) -> list[tuple[str, BenchRun]]:
    return [(path.stem, BenchRun.load(path)) for path in paths]


@app.command()
def report(
    runs: Annotated[list[Path], typer.Argument(help="Results files written by bench prefix-cache|multiturn|sweep.")],
    html: Annotated[Path, typer.Option("--html", help="The HTML page to write; PNGs go next to it.")] = Path(
        "bench-report.html"
    ),
    json_output: Json = False,
) -> None:
    """An HTML page with plots from saved runs, and the plots as PNGs next to it.

    Self-contained (figures embedded): TTFT by turn, latency CDFs, throughput vs concurrency, hit vs miss,
    with each run's tables, server counters, config and environment.

    Example: tokengate bench report tokengate-bench/*.json --html report.html
    """
    written = write_report(_load(runs), html)
    if json_output:
        print_json(written)
        return
    _render_report(written)


def _render_report(written: Report) -> None:
    console.print(f"wrote {written.html}", highlight=False)
    for image in written.images:
        console.print(f"  {image}", highlight=False)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Results file A (the baseline).")],
    b: Annotated[Path, typer.Argument(help="Results file B.")],
    min_difference: Annotated[
        float, typer.Option(help="Differences below this fraction of A's median count as indistinguishable.")
    ] = 0.0,
    json_output: Json = False,
) -> None:
    """B against A per metric: difference of medians, its 95% CI, and a verdict.

    The verdict is "A faster" or "B faster" when the bootstrap CI of median(B) - median(A) excludes 0 (and the
    difference is at least --min-difference of A's median), else "indistinguishable". Latencies are in ms;
    output_tok_per_s compares the output tokens per second of ten equal time windows of each run.

    Example: tokengate bench compare caching-on.json caching-off.json
    """
    (a_name, run_a), (b_name, run_b) = _load([a, b])
    if a_name == b_name:
        a_name, b_name = str(a), str(b)
    result = compare_runs(run_a, run_b, a_name=a_name, b_name=b_name, min_relative_difference=min_difference)
    if json_output:
        print_json(result)
        return
    _render_comparison(result)


def _render_comparison(result: RunComparison) -> None:
    table = Table(title=f"B = {result.b} against A = {result.a}")
    for column in ("metric", "n A/B", "A median", "B median", "B - A [95% CI]", "B/A", "verdict"):
        left = column in ("metric", "verdict")
        table.add_column(column, justify="left" if left else "right", no_wrap=left)
    for c in result.comparisons:
        difference = "–" if c.difference is None else f"{c.difference:+.1f} [{c.ci_low:+.1f}, {c.ci_high:+.1f}]"
        style = {"A faster": "red", "B faster": "green"}.get(c.verdict, "")
        verdict = f"[{style}]{c.verdict}[/]" if style else c.verdict
        ratio = "–" if c.ratio is None else f"{c.ratio:.3f}"
        table.add_row(c.metric, f"{c.a.n}/{c.b.n}", _ms(c.a, ci=False), _ms(c.b, ci=False), difference, ratio, verdict)
    console.print(table)
    if result.scalars:
        scalars = Table(title="throughput and counts (one number per run: no CI)")
        for column in ("figure", "A", "B", "B/A"):
            scalars.add_column(column, justify="left" if column == "figure" else "right")
        for s in result.scalars:
            scalars.add_row(s.name, _number(s.a), _number(s.b), "–" if s.ratio is None else f"{s.ratio:.3f}")
        console.print(scalars)
    for warning in result.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False)


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:,.3f}".rstrip("0").rstrip(".")
