"""Scaling of data-flow token extraction (``extract_tokens``) with the size of one page.

Prints, for crafted pages of 10 KB to 1 MB (the inputs that made the old backtracking
patterns quadratic: runs of letters, of ``a-`` and ``a.`` label pieces, of ``@``, a realistic
page dense with addresses), the median time of one extraction, its time per KB and its ratio
to the 10 KB time divided by the size ratio: about 1 at every size means linear scaling
(a quadratic cost would grow that ratio a hundredfold by 1 MB). With ``--observe`` it also
times ``TaintTracker.observe`` of the page (extraction plus recording).

Run: ``.venv/bin/python benches/bench_taint_extract.py [--quick] [--observe]``. Not a test.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from routeguard.bench.timing import percentile, time_calls
from routeguard.enforce.taint import TaintTracker, extract_tokens

SIZES = [10_000, 30_000, 100_000, 300_000, 1_000_000]
UNITS = {
    "letters": "a",
    "labels": "a-",
    "dotted": "a.",
    "at-signs": "a@",
    "page": "Wire it to DE89370400440532013000 or mail bob@example.com, see https://x.io/p. ",
}


def page(unit: str, size: int) -> str:
    """``unit`` repeated to ``size`` characters."""
    return (unit * (size // len(unit) + 1))[:size]


def median_s(fn: Callable[[str], object], text: str, reps: int) -> float:
    """Median wall time of ``reps`` calls of ``fn(text)``, in seconds."""
    return percentile(time_calls(lambda: fn(text), reps, warmup=1), 50) / 1e9


def main(argv: list[str]) -> int:
    """Print the scaling table."""
    sizes = SIZES[::2] if "--quick" in argv else SIZES
    observe = "--observe" in argv
    print(f"{'input':<10} {'size':>9} {'extract ms':>11} {'us/KB':>8} {'vs linear':>10}"
          + (f" {'observe ms':>11}" if observe else ""))  # fmt: skip
    for name, unit in UNITS.items():
        base: float | None = None
        for size in sizes:
            text = page(unit, size)
            reps = 5 if size <= 100_000 else 3
            t = median_s(extract_tokens, text, reps)
            per_kb = t / (size / 1000)
            base = per_kb if base is None else base
            row = (
                f"{name:<10} {size:>9,} {t * 1e3:>11.2f} {per_kb * 1e6:>8.1f} "
                f"{per_kb / base:>10.2f}"
            )
            if observe:
                o = median_s(lambda x: TaintTracker().observe("browse", x), text, reps)
                row += f" {o * 1e3:>11.2f}"
            print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
