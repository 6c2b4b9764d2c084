"""What every suite gets and gives: :class:`Options` in (quick mode, progress, data paths),
:class:`~routeguard.bench.report.Row` s out, :class:`Skip` when it cannot run here."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

# The environment variable naming LiteLLM's `litellm` command for the ``proxy`` suite.
LITELLM_ENV = "ROUTEGUARD_BENCH_LITELLM"


class Skip(Exception):
    """Raised by a suite that cannot run on this machine; the message says why."""


@dataclass
class Progress:
    """Progress lines on stderr (``[2/5 embed] f16 short``), so stdout keeps only the table."""

    stream: TextIO = field(default_factory=lambda: sys.stderr)
    label: str = ""
    started: float = field(default_factory=time.perf_counter)

    def step(self, message: str) -> None:
        """Say what is being measured now."""
        took = time.perf_counter() - self.started
        print(f"[{took:6.1f}s {self.label}] {message}", file=self.stream, flush=True)


@dataclass
class Options:
    """The run's options, shared by every suite."""

    quick: bool = False
    quality: bool = False
    data: Path | None = None
    litellm: bool = True
    litellm_path: Path | None = None
    # The embedder precision the cache and router suites run ("auto": what the gateway picks).
    precision: str = "auto"
    progress: Progress = field(default_factory=Progress)
    # Peers a suite had to leave out though the suite ran ("proxy: litellm" -> why); the
    # report lists them beside the skipped suites.
    left_out: dict[str, str] = field(default_factory=dict)

    def n(self, full: int, quick: int) -> int:
        """A sample count: ``quick`` in quick mode, ``full`` otherwise."""
        return quick if self.quick else full


@contextmanager
def one_core() -> Iterator[None]:
    """Pin this process to its first allowed CPU for the block (per-core figures whatever the
    machine has), then give the old affinity back."""
    if not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(before)})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
