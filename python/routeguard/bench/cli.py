"""``routeguard bench``: run the bundled suites, print one table naming the CPU and its SIMD
level, and write the results as JSON (``--json``), as a Markdown table (``--markdown``), and
into the generated blocks of Markdown pages such as docs/performance.md (``--update``).

Suites are imported only when picked, so one that cannot run here (a missing dependency, no
data) is skipped with its reason instead of stopping the run.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from routeguard.bench.page import (
    BLOCKS,
    PageError,
    check_page,
    fillable,
    find_blocks,
    read_page,
    update_page,
)
from routeguard.bench.report import Report, Row
from routeguard.bench.suite import LITELLM_ENV, Options, Progress, Skip
from routeguard.bench.timing import timer_overhead_ns

SUITES: dict[str, str] = {
    "gateway": "Gateway.chat_result in process, budgets off/on, vs a bare dispatcher",
    "embed": "MiniLM embedding at f32/f16/int8/bf16 vs the numpy backend",
    "vector": "top-10 search over 10k vectors: flat f32, flat int8, HNSW vs numpy",
    "cache": "a semantic cache hit end to end vs a numpy cache",
    "budget": "ledger reserve+settle vs a Python ledger under a lock",
    "policy": "compiled policy matcher vs the Python reference interpreter",
    "router": "routing decision given the vector (and APGR with --quality)",
    "proxy": "proxy overhead: routeguard serve vs a bare passthrough (and LiteLLM)",
}


def register(subparsers: Any) -> None:
    """Add the ``bench`` command to the main parser's subparsers (``run`` is its function)."""
    p = subparsers.add_parser(
        "bench",
        help="run the bundled benchmark suite",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--suite",
        default="all",
        help="comma-separated suites (default: all): " + ", ".join(SUITES),
    )
    p.add_argument("--quick", action="store_true", help="CI-size runs (fewer samples)")
    p.add_argument("--json", metavar="PATH", help="write the results as JSON")
    p.add_argument("--markdown", metavar="PATH", help="write the table as Markdown (a new file)")
    p.add_argument(
        "--update",
        metavar="PATH",
        action="append",
        default=[],
        help="replace the generated blocks of a Markdown page in place (between "
        "<!-- bench:NAME begin --> and <!-- bench:NAME end -->; NAME: "
        + ", ".join(BLOCKS)
        + "); repeatable; refused, the page untouched, when its markers are missing or "
        "unbalanced or the run fills none of its blocks",
    )
    p.add_argument(
        "--quality",
        action="store_true",
        help="router: also APGR on RouteLLM's MMLU outcomes (shared/data/routing/routellm-mmlu)",
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="the shared data directory (default: the first shared/data above the current one)",
    )
    p.add_argument(
        "--litellm",
        metavar="PATH",
        help="proxy: LiteLLM's `litellm` command, e.g. in a venv of its own (default: "
        f"${LITELLM_ENV}, else a `litellm` beside this Python when importable)",
    )
    p.add_argument("--no-litellm", action="store_true", help="proxy: leave LiteLLM out")
    p.add_argument(
        "--precision",
        choices=["auto", "f32", "f16", "bf16", "int8"],
        default="auto",
        help="cache, router: the MiniLM precision (default: auto, as the gateway picks)",
    )
    p.add_argument("--list", action="store_true", help="list the suites and exit")
    p.set_defaults(run=main)


def main(args: argparse.Namespace) -> int:
    """Run the picked suites; print the table; write the files asked for."""
    if args.list:
        for name, what in SUITES.items():
            print(f"{name:<8} {what}")
        return 0
    names = list(SUITES) if args.suite == "all" else [s.strip() for s in args.suite.split(",")]
    unknown = [n for n in names if n not in SUITES]
    if unknown:
        print(f"unknown suite(s) {', '.join(unknown)}; choose from {', '.join(SUITES)}",
              file=sys.stderr)  # fmt: skip
        return 2
    can = fillable(names, args.quick, list(SUITES))
    for page in args.update:  # check the markers before a long run, not after
        try:
            check_page(read_page(Path(page)), can, page)
        except (OSError, UnicodeDecodeError, PageError) as exc:
            print(f"routeguard bench: --update {page}: {exc}", file=sys.stderr)
            return 2
    opts = Options(
        quick=args.quick,
        quality=args.quality,
        data=Path(args.data) if args.data else find_data(),
        litellm=not args.no_litellm,
        litellm_path=Path(args.litellm) if args.litellm else None,
        precision=args.precision,
    )
    report = run(names, opts)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(report.markdown())
    return update_pages([Path(p) for p in args.update], report)


def update_pages(pages: list[Path], report: Report) -> int:
    """Replace the blocks of each page that ``report`` fills; 2 if any page was refused."""
    status = 0
    for page in pages:
        try:
            done = update_page(page, report, list(SUITES))
        except (OSError, UnicodeDecodeError, PageError) as exc:
            print(f"routeguard bench: --update {page}: {exc}", file=sys.stderr)
            status = 2
            continue
        kept = [b.name for b in find_blocks(read_page(page)) if b.name not in done]
        note = f" (kept, not filled by this run: {', '.join(kept)})" if kept else ""
        print(f"updated {page}: bench:{', bench:'.join(done)}{note}", file=sys.stderr)
    return status


def run(names: list[str], opts: Options) -> Report:
    """Run ``names`` in order and gather their rows (a suite that raises :class:`Skip` is
    listed as skipped with its reason)."""
    report = Report(quick=opts.quick, suites=list(names))
    report.timer_overhead_ns = timer_overhead_ns()
    for i, name in enumerate(names, 1):
        opts.progress = Progress(label=f"{i}/{len(names)} {name}")
        opts.progress.step("starting")
        try:
            suite: Callable[[Options], list[Row]] = importlib.import_module(
                f"routeguard.bench.{name}"
            ).run
            report.rows += suite(opts)
        except Skip as why:
            report.skipped[name] = str(why)
            opts.progress.step(f"skipped: {why}")
        except ImportError as exc:
            report.skipped[name] = f"missing dependency ({exc})"
            opts.progress.step(f"skipped: {exc}")
    report.skipped.update(opts.left_out)
    return report


def find_data(start: Path | None = None) -> Path | None:
    """The first ``shared/data`` directory at or above ``start`` (default: the working
    directory), where the project's shared data sets live; None if there is none."""
    here = (start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / "shared" / "data").is_dir():
            return d / "shared" / "data"
    return None
