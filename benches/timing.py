"""The shared per-call timer (:mod:`routeguard.bench.timing`) for the scripts in benches/.

Loaded from the source tree by path, not imported through the package: the policy peers'
worker (``policy_peers.py --peer-worker``) runs in a virtualenv without routeguard.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_PATH = Path(__file__).resolve().parents[1] / "python" / "routeguard" / "bench" / "timing.py"
_spec = importlib.util.spec_from_file_location("routeguard_bench_timing", _PATH)
assert _spec is not None and _spec.loader is not None
_mod = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _mod  # dataclasses look their module up while building the class
_spec.loader.exec_module(_mod)

Summary = _mod.Summary
gc_paused = _mod.gc_paused
percentile = _mod.percentile
summarize = _mod.summarize
time_async = _mod.time_async
time_batches = _mod.time_batches
time_calls = _mod.time_calls
time_each = _mod.time_each
timer_overhead_ns = _mod.timer_overhead_ns
