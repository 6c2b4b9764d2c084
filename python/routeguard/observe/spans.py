"""Where the request path reports to tracing: upstream attempts (``routeguard.fallback``),
outgoing HTTP headers (``routeguard.providers.http``), tool-call decisions
(``routeguard.enforce.proxy``), stream chunks (``routeguard.relay``) and, when asked for,
the gateway's stages (:func:`stage`: the cache lookup and the routing decision).

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

    @property
    def stages(self) -> bool:
        """Whether the gateway's stages get spans of their own."""
        ...

    def stage_begin(self, name: str) -> Any:
        """A stage of the current request starts: its span (not made current)."""
        ...

    def stage_end(
        self, handle: Any, attributes: Mapping[str, Any], error: BaseException | None
    ) -> None:
        """The stage ``handle`` ended, with what it decided (or the error it raised)."""
        ...


recorder: Recorder | None = None


def install(new: Recorder | None) -> None:
    """Make ``new`` the process's recorder (None: tracing off)."""
    global recorder
    recorder = new


class Stage:
    """``with stage("name") as st: ...; if st: st.note({...})``: one stage's span. The
    instance :func:`stage` returns when stage spans are off is falsy and does nothing, so
    the attributes are not even built then."""

    __slots__ = ("_attributes", "_handle", "_recorder")

    def __init__(self, recorder: Recorder | None = None, handle: Any = None) -> None:
        self._recorder = recorder
        self._handle = handle
        self._attributes: dict[str, Any] = {}

    def __bool__(self) -> bool:
        return self._recorder is not None

    def __enter__(self) -> Stage:
        return self

    def __exit__(self, kind: object, error: BaseException | None, tb: object) -> None:
        if self._recorder is not None:
            self._recorder.stage_end(self._handle, self._attributes, error)

    def note(self, attributes: Mapping[str, Any]) -> None:
        """Add attributes to the stage's span (None values are left out)."""
        self._attributes.update((k, v) for k, v in attributes.items() if v is not None)


_OFF = Stage()


def stage(name: str) -> Stage:
    """The span of one stage of the current request (a shared no-op when tracing or stage
    spans are off: a global read and a call)."""
    r = recorder
    if r is None or not r.stages:
        return _OFF
    return Stage(r, r.stage_begin(name))


def inject(headers: MutableMapping[str, str]) -> None:
    """Propagate the current trace context on an outgoing request (a no-op when off)."""
    r = recorder
    if r is not None:
        r.inject(headers)
