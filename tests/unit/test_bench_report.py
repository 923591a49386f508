"""`bench report`: a self-contained HTML page whose figures are embedded PNGs, and the PNGs next to it."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.unit.test_bench_analysis import prefix_cache_run
from tests.unit.test_bench_run import make_run, record
from tokengate.bench.aggregate import Slo
from tokengate.bench.multiturn import add_multiturn_summaries
from tokengate.bench.report import write_report
from tokengate.bench.run import BenchRun, SweepLevel
from tokengate.bench.sweep import add_level_summaries
from tokengate.errors import InvalidInputError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
VOID = {"meta", "img", "hr", "br"}


class TagBalance(HTMLParser):
    """Fails on a closing tag that does not match the open one: enough to catch broken markup."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()


def sweep_run() -> BenchRun:
    rows = [record(10 + i + 20 * (i % 3), 200 + i, level=i % 3) for i in range(30)]
    levels = [SweepLevel(index=i, concurrency=c, started_at=0, ended_at=1, summaries={}, scalars={})
              for i, c in enumerate((1, 4, 8))]  # fmt: skip
    return add_level_summaries(make_run("sweep", rows), levels, Slo())


def multiturn_run() -> BenchRun:
    rows = [record(20 + t, 90, session=s, turn=t, prompt_tokens=500 * (t + 1), cached_tokens=480 * t)
            for s in range(2) for t in range(4)]  # fmt: skip
    return add_multiturn_summaries(make_run("multiturn", rows, config={"sessions": 2}), 4)


def test_report_embeds_every_figure_and_writes_pngs(tmp_path: Path) -> None:
    runs = [("cache <on>", prefix_cache_run(750, 50)), ("agents", multiturn_run()), ("load", sweep_run())]
    report = write_report(runs, tmp_path / "out" / "report.html")
    names = sorted(p.name for p in report.images)
    assert names == [f"report.{n}.png" for n in ("hit-vs-miss", "latency-cdfs", "throughput", "ttft-by-turn")]
    for image in report.images:
        assert image.parent == report.html.parent
        assert image.read_bytes().startswith(PNG_MAGIC)
    page = report.html.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert "cache &lt;on&gt;" in page and "cache <on>" not in page  # labels are escaped
    parser = TagBalance()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert len(parser.images) == 4
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")  # self-contained: nothing fetched
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")).startswith(PNG_MAGIC)
    assert not re.search(r'src="(?!data:)', page)
    for text in ("Prefix cache", "hit faster", "Levels", "concurrency 8", "ttft_ms[turn=3]", "theoretical"):
        assert text in page


def test_only_the_figures_that_apply(tmp_path: Path) -> None:
    report = write_report([("load", sweep_run())], tmp_path / "r.html")
    assert sorted(p.name for p in report.images) == ["r.latency-cdfs.png", "r.throughput.png"]
    with pytest.raises(InvalidInputError, match="at least one"):
        write_report([], tmp_path / "x.html")


@pytest.mark.parametrize("workload", ["prefix-cache", "multiturn", "sweep"])
def test_a_run_stopped_before_any_request_reports_without_figures(tmp_path: Path, workload: str) -> None:
    report = write_report([("stopped", make_run(workload, [], interrupted=True))], tmp_path / "r.html")
    assert report.images == []
    assert "interrupted" in report.html.read_text()
