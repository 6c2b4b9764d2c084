"""``routeguard analyze`` and ``routeguard simulate``: the decision framework's commands.

- ``analyze LOG [--out report.html] [--json] [--config FILE]``: per-route repetition,
  complexity, savings and a recommended config (:mod:`routeguard.analyze.analysis`); prints
  a summary (or JSON) and writes the HTML report.
- ``simulate --config FILE LOG [--json]``: replays the log through the config's layers and
  through a no-layers baseline against the simulated upstream
  (:mod:`routeguard.analyze.simulate`).

The main ``routeguard`` parser calls :func:`register`; each command returns an exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from routeguard.errors import ConfigError, RouteguardError


def register(subparsers: Any) -> None:
    """Add ``analyze`` and ``simulate`` to the main parser's subparsers (``run`` = handler)."""
    an = subparsers.add_parser("analyze", help="analyse a request log: cache, routing, advice")
    an.add_argument("log", help="JSON-lines request log (OpenAI or Anthropic bodies, or wrapped)")
    an.add_argument("--out", default="routeguard-report.html", help="HTML report path")
    an.add_argument("--no-html", action="store_true", help="do not write the HTML report")
    an.add_argument("--json", action="store_true", help="print machine-readable results")
    an.add_argument("--config", help="a routeguard/LiteLLM config for prices and routes")
    an.add_argument("--cheap", help="the cheap model to price routing with")
    an.add_argument("--strong", help="the strong model to price routing with")
    an.add_argument("--quality", type=float, default=0.9, help="routing quality target")
    an.add_argument("--max-risk", type=float, default=0.05, help="acceptable false-hit risk")
    an.add_argument("--min-hit-rate", type=float, default=0.10, help="hit rate worth caching")
    an.add_argument(
        "--max-error-rate",
        type=float,
        default=0.02,
        help="replay each route under cache.max_error_rate (needs answers in the log; 0: skip)",
    )
    an.add_argument("--progress", action="store_true", help="progress even when not a TTY")
    an.set_defaults(run=_analyze)

    sim = subparsers.add_parser("simulate", help="replay a log through the layers vs baseline")
    sim.add_argument("log", help="JSON-lines request log")
    sim.add_argument("--config", required=True, help="the config whose layers to replay")
    sim.add_argument("--json", action="store_true", help="print machine-readable results")
    sim.add_argument(
        "--upstream-ttft-ms", type=float, default=0.0, help="simulated upstream delay per call"
    )
    sim.add_argument("--progress", action="store_true", help="progress even when not a TTY")
    sim.set_defaults(run=_simulate)


def _analyze(args: argparse.Namespace) -> int:
    from routeguard import config as config_mod
    from routeguard.analyze import html
    from routeguard.analyze.analysis import analyze
    from routeguard.analyze.recommend import Policy
    from routeguard.analyze.simulate import simulated_config

    try:
        # Only prices and routes matter here: credentials need not be set.
        cfg = None
        if args.config:
            raw = simulated_config(config_mod.read_file(args.config), "http://127.0.0.1")
            cfg = config_mod.load(raw)
        result = analyze(
            args.log,
            config=cfg,
            cheap=args.cheap,
            strong=args.strong,
            policy=Policy(
                min_hit_rate=args.min_hit_rate, max_risk=args.max_risk, quality=args.quality
            ),
            progress=True if args.progress else None,
            max_error_rate=args.max_error_rate or None,
        )
    except (ConfigError, RouteguardError) as exc:
        print(exc.message, file=sys.stderr)
        return 1
    report = None if args.no_html else html.write(result, args.out)
    if args.json:
        out = result.to_dict()
        out["report"] = None if report is None else str(report)
        print(json.dumps(out, indent=2))
    else:
        print(result.summary())
        if report is not None:
            print(f"report: {report}")
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from routeguard.analyze.simulate import simulate

    try:
        result = simulate(
            args.config,
            args.log,
            ttft=args.upstream_ttft_ms / 1000.0,
            progress=True if args.progress else None,
        )
    except (ConfigError, RouteguardError) as exc:
        print(exc.message, file=sys.stderr)
        return 1
    print(json.dumps(result.to_dict(), indent=2) if args.json else result.summary())
    return 0
