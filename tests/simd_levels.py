"""Print the ``ROUTEGUARD_SIMD`` levels this CPU offers below its widest, one per line.

The default test run covers the widest level; ``make simd-test`` reruns the ``simd``-marked
tests at each level printed here. A level counts as offered when a fresh interpreter forced
to it reports it back (an unsupported level falls back to the widest).
"""

from __future__ import annotations

import os
import subprocess
import sys

LEVELS = ("scalar", "avx2", "avx512", "neon")


def level_in_effect(forced: str | None) -> str:
    """The SIMD level a fresh interpreter runs with when ``ROUTEGUARD_SIMD`` is ``forced``."""
    env = {k: v for k, v in os.environ.items() if k != "ROUTEGUARD_SIMD"}
    if forced is not None:
        env["ROUTEGUARD_SIMD"] = forced
    done = subprocess.run(
        [sys.executable, "-c", "from routeguard import _core; print(_core.simd_level())"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def main() -> None:
    """Print each offered level other than the default one."""
    widest = level_in_effect(None)
    for level in LEVELS:
        if level != widest and level_in_effect(level) == level:
            print(level)


if __name__ == "__main__":
    main()
