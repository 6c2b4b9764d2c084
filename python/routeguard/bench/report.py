"""What a ``routeguard bench`` run produces: rows (ours, the peer's, the ratio) and the machine
they ran on, rendered as a terminal table, a JSON document and a Markdown table.

Every row compares routeguard with a peer measured in the same run. ``ratio`` is always "how
many times better ours is": peer / ours for times (lower is better), ours / peer for scores.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
from dataclasses import dataclass, field
from typing import Any, Literal

from routeguard._version import __version__

Better = Literal["lower", "higher"]


@dataclass(frozen=True, slots=True)
class Row:
    """One comparison: our figure and the peer's for one case of one suite."""

    suite: str
    case: str
    ours: float
    peer: float
    peer_name: str
    unit: str = "µs"
    metric: str = "p50"
    better: Better = "lower"
    detail: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """How many times better ours is (> 1: ours wins)."""
        if self.better == "lower":
            return self.peer / self.ours if self.ours > 0 else float("inf")
        return self.ours / self.peer if self.peer > 0 else float("inf")

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for JSON output."""
        return {
            "suite": self.suite,
            "case": self.case,
            "metric": self.metric,
            "unit": self.unit,
            "better": self.better,
            "ours": self.ours,
            "peer": self.peer,
            "peer_name": self.peer_name,
            "ratio": self.ratio,
            "detail": self.detail,
        }


def cpu_model() -> str:
    """The CPU's ``model name`` from /proc/cpuinfo (with family/model/stepping)."""
    from routeguard.embed.precision import cpu_model as named

    return named()


def simd_level() -> str:
    """The instruction-set level the compiled kernels picked at run time (e.g. ``avx512``)."""
    from routeguard._native import core

    return str(core.simd_level())


@dataclass
class Report:
    """A run: the machine, the options, and every suite's rows (or why it was skipped)."""

    quick: bool
    cpu: str = field(default_factory=cpu_model)
    simd: str = field(default_factory=simd_level)
    cores: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))
    rows: list[Row] = field(default_factory=list)
    # The suites the run was asked for, in order (each gave rows or is in ``skipped``).
    suites: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    timer_overhead_ns: float = 0.0
    started: str = field(
        default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    )

    def machine(self) -> str:
        """One line naming the CPU, SIMD level and core count."""
        return f"CPU: {self.cpu}, SIMD {self.simd}, {self.cores} cores"

    def as_dict(self) -> dict[str, Any]:
        """The JSON document ``--json`` writes."""
        return {
            "routeguard": __version__,
            "started": self.started,
            "quick": self.quick,
            "cpu": self.cpu,
            "simd": self.simd,
            "cores": self.cores,
            "python": platform.python_version(),
            "timer_overhead_ns": self.timer_overhead_ns,
            "suites": self.suites,
            "rows": [r.as_dict() for r in self.rows],
            "skipped": self.skipped,
        }

    def table(self) -> str:
        """The terminal table: one line per row, then the skipped suites."""
        head = ("suite", "case", "ours", "peer", "ratio", "peer is")
        lines = [_fmt(r) for r in self.rows]
        widths = [max(len(x[i]) for x in [head, *lines]) for i in range(len(head))]
        out = [f"routeguard bench ({'quick' if self.quick else 'full'}): {self.machine()}"]
        for cells in [head, *lines]:
            out.append(
                "  ".join(
                    _pad(c, w, i) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
                ).rstrip()
            )
        out.append(_legend())
        out += [f"skipped {name}: {why}" for name, why in self.skipped.items()]
        return "\n".join(out)

    def markdown(self) -> str:
        """A Markdown fragment (caption and table) for docs to include."""
        mode = "quick mode" if self.quick else "full run"
        out = [
            f"`routeguard bench` {__version__}, {mode}, {self.started[:10]}. {self.machine()}.",
            "",
            "| suite | case | ours | peer | ratio | peer is |",
            "|---|---|---:|---:|---:|---|",
        ]
        out += ["| " + " | ".join(_fmt(r)) + " |" for r in self.rows]
        out += ["", _legend()]
        if self.skipped:
            out += [""] + [f"- skipped `{n}`: {why}" for n, why in self.skipped.items()]
        return "\n".join(out) + "\n"


def _legend() -> str:
    return (
        "ratio = how many times better ours is, in the same run: peer/ours for times (p50), "
        "ours/peer for scores; below 1 the peer wins."
    )


def _num(x: float) -> str:
    if x == 0 or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}"
    if abs(x) >= 0.1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _fmt(r: Row) -> tuple[str, str, str, str, str, str]:
    unit = f" {r.unit}" if r.unit else ""
    return (
        r.suite,
        r.case if r.metric == "p50" else f"{r.case} ({r.metric})",
        _num(r.ours) + unit,
        _num(r.peer) + unit,
        f"{r.ratio:.2f}",
        r.peer_name,
    )


def _pad(cell: str, width: int, column: int) -> str:
    return cell.rjust(width) if column in (2, 3, 4) else cell.ljust(width)
