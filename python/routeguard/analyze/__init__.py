"""routeguard.analyze: the decision framework (see DESIGN.md): what a cache and a router would
do on your traffic, before you turn them on.

- :func:`analyze` (``routeguard analyze LOG``): request log -> per route, repetition (exact and
  near-duplicate clusters, estimated hit rate and false-hit risk per threshold), complexity
  (router-score histogram, routing savings per quality target, cost per request) and a
  recommended config (routed + cached / routed only / pinned + enforced) with its reasons;
  rendered as text, JSON or a self-contained HTML report (:mod:`~routeguard.analyze.html`).
- :func:`simulate` (``routeguard simulate --config FILE LOG``): the log replayed through the
  real Gateway against the simulated upstream, layered vs a no-layers baseline.

The log format is described in :mod:`~routeguard.analyze.logs`.
"""

from routeguard.analyze.analysis import Analysis, analyze
from routeguard.analyze.logs import LogRecord, read_log
from routeguard.analyze.simulate import Simulation, simulate

__all__ = ["Analysis", "LogRecord", "Simulation", "analyze", "read_log", "simulate"]
