"""Where the request path reports to tracing: upstream attempts (``routeguard.fallback``),
outgoing HTTP headers (``routeguard.providers.http``), tool-call decisions
(``routeguard.enforce.proxy``) and stream chunks (``routeguard.relay``).

Each hook reads one module global, :data:`recorder`, and does nothing more while it is None,
so code paths stay free of OpenTelemetry when tracing is off (the default) and this module
imports nothing optional. The proxy installs a :class:`Recorder` when
``observability.tracing`` is configured (:class:`routeguard.server.tracing.Tracing`).
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any, Protocol

from routeguard.deployment import Deployment


class Recorder(Protocol):
    """What tracing does at each hook (see :class:`routeguard.server.tracing.Tracing`)."""

    def attempt_begin(self, alias: str, dep: Deployment) -> Any:
        """An upstream attempt starts: its span, current until :meth:`attempt_end`."""
        ...

    def attempt_end(
        self, handle: Any, error: BaseException | None, stream: bool, value: Any
    ) -> None:
        """The attempt ``handle`` ended (``error`` None: it succeeded with ``value``; a
        successful ``stream`` attempt's span stays open until the stream ends)."""
        ...

    def inject(self, headers: MutableMapping[str, str]) -> None:
        """Add the current span's ``traceparent`` (and ``tracestate``) to ``headers``."""
        ...

    def tool_decision(self, function: Mapping[str, Any], verdict: Any, started_ns: int) -> None:
        """One enforcement decision on a tool call, checked from ``started_ns``."""
        ...

    def stream_chunk(self, chunk: Mapping[str, Any]) -> None:
        """One chunk of a served stream went by (its id, model and finish reasons)."""
        ...


recorder: Recorder | None = None


def install(new: Recorder | None) -> None:
    """Make ``new`` the process's recorder (None: tracing off)."""
    global recorder
    recorder = new


def inject(headers: MutableMapping[str, str]) -> None:
    """Propagate the current trace context on an outgoing request (a no-op when off)."""
    r = recorder
    if r is not None:
        r.inject(headers)
