"""Runs local forward passes one at a time, each with BLAS capped to one thread.

numpy's OpenBLAS starts one thread per core by default. On a small proxy box those threads
would fight the event loop (and each other, across concurrent requests) for the cores, and
for the small matrices of one prompt they barely help. So every local forward pass runs
inside :func:`single_threaded`, which caps BLAS through threadpoolctl (OpenBLAS, MKL and
BLIS alike) for the ``with`` block and restores the process's own setting after it, so
other numpy code in the process is unaffected between embeddings.

Why one lock around it: OpenBLAS (pthreads build, what numpy wheels ship) has one thread
count for the whole process, so threadpoolctl lets only one Python thread at a time change
it and silently ignores the others. Serialising the blocks makes every caller, on any
thread, the rightful owner of the setting while it runs. It also means local embedding
uses at most one core of the process at a time, by design: the other cores serve requests.
Cost: a few microseconds per block. A thread that holds its own ``threadpool_limits``
block at the same moment keeps control, and our cap is then a no-op until it exits.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

BLAS_THREADS = 1
"""Threads BLAS may use during a local forward pass (one: the design's latency target
is per core, and the other cores belong to the event loop and other requests)."""

_lock = threading.RLock()  # re-entrant: a nested block on the same thread is harmless
_controller: Any = None  # threadpoolctl.ThreadpoolController, created on first use


@contextmanager
def single_threaded() -> Iterator[None]:
    """Run the ``with`` block alone in the process, with BLAS capped to one thread."""
    global _controller
    with _lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        with _controller.limit(limits=BLAS_THREADS, user_api="blas"):
            yield
