"""The relay of a served stream: what the client iterates, and what settles its budget hold.

``Relay`` pulls upstream chunks, passes them on (the usage chunk only when the client asked
for it), feeds the cache's assembler, and ends the stream at ``max_stream_duration`` from
the request's start. Whatever ends it -- the last chunk, an upstream failure, the time
limit, the client's ``aclose`` (before the first read too) or the object being dropped --
``_finish`` runs once: it closes the upstream stream and settles the hold from the
provider's usage, or from an estimate of what was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeGuard

from routeguard.budget.bound import completion_bound, measure
from routeguard.budget.ledger import Reservation
from routeguard.chunks import Assembler, response_as_chat
from routeguard.errors import MidStreamError, ProviderError
from routeguard.observe import spans

if TYPE_CHECKING:
    from routeguard.budget.layer import BudgetLayer
    from routeguard.cache.layer import CacheLayer, Ticket
    from routeguard.config import Config
    from routeguard.deployment import Deployment
    from routeguard.result import ChatResult
    from routeguard.routing.balance import Balancer

Json = dict[str, Any]


def _delta_chars(chunk: Json) -> int:
    n = 0
    for c in chunk.get("choices") or ():
        delta = c.get("delta") or {}
        n += len(delta.get("content") or "")
        for tc in delta.get("tool_calls") or ():
            n += len((tc.get("function") or {}).get("arguments") or "")
    return n


class Relay:
    """One served stream as its client sees it (an async iterator of chunks).

    It passes chunks on, notes usage, turns late failures into MidStreamError, caches the
    assembled answer once complete, and cuts the stream at ``max_stream_duration``. Its
    budget hold is settled (or released) exactly once on every path: drained, failed, cut,
    closed -- before its first read too, which an async generator's ``finally`` would
    miss -- or dropped unclosed. A stream that ends without usage is charged what it sent:
    the prompt's typical count and the tokens received (OpenAI: one a chunk; others: ~4
    bytes a token), never above the request's completion bound, so never more than the
    complete answer could cost.
    """

    def __init__(
        self,
        first: Json,
        it: AsyncIterator[Json],
        *,
        result: ChatResult,
        request: Json,
        want_usage: bool,
        ends_at: float,
        hold: Reservation | None,
        budget: BudgetLayer | None,
        balancer: Balancer,
        cache: CacheLayer | None,
        ticket: Ticket | None,
        settings: Config,
    ) -> None:
        """Relay ``first`` then the rest of ``it`` for ``result`` until the loop time
        ``ends_at``; ``hold`` is settled on ``budget`` at the end."""
        self._first = first
        self._it = it
        self._result = result
        self._request = request
        self._want_usage = want_usage
        self._ends_at = ends_at
        self._hold = hold
        self._budget = budget
        self._balancer = balancer
        self._cache = cache
        self._ticket = ticket
        self._settings = settings
        self._loop = asyncio.get_running_loop()
        self._chars = 0  # text received from upstream
        self._chunks = 0  # chunks that carried text
        self._finished = False
        # The stream's deadline: one timer (armed at the first wait for upstream), not one
        # per chunk; see _next.
        self._timer: asyncio.TimerHandle | None = None
        self._cut = False  # the deadline passed
        self._waiting: asyncio.Task[Any] | None = None  # the task waiting for upstream now
        self._cancelled: asyncio.Task[Any] | None = None  # the task the deadline cancelled
        self._gen = self._run()

    def __aiter__(self) -> Relay:
        return self

    def __anext__(self) -> Awaitable[Json]:
        return self._gen.__anext__()  # the generator's own awaitable: no frame of ours a chunk

    async def aclose(self) -> None:
        """Stop: close the upstream stream and settle the hold for what was sent."""
        try:
            await self._gen.aclose()
        finally:
            await self._finish()

    def __del__(self) -> None:
        # (The deadline timer is left to _finish, on the loop: the collector may run this on
        # any thread, and a timer handle is not to be cancelled off its loop's thread.)
        loop = getattr(self, "_loop", None)
        if getattr(self, "_finished", True) or loop is None or loop.is_closed():
            return
        # Dropped without aclose(): settle on the loop it belongs to.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_in_background, self._finish)

    async def _run(self) -> AsyncGenerator[Json, None]:
        assembler = Assembler() if self._ticket is not None else None
        try:
            chunk: Json | None = self._first
            while chunk is not None:
                if assembler is not None:
                    assembler.feed(chunk)
                if self._observe(chunk):
                    yield chunk
                chunk = await self._next()
            if assembler is not None and self._ticket is not None and self._cache is not None:
                self._cache.store(self._ticket, assembler.result())
        except MidStreamError:
            raise
        except ProviderError as exc:
            raise MidStreamError(f"upstream stream failed after it started: {exc.message}") from exc
        finally:
            await self._finish()

    def _observe(self, chunk: Json) -> bool:
        """Count what ``chunk`` sent and note its usage; whether to pass it on (a usage-only
        chunk the client did not ask for is not)."""
        rec = spans.recorder  # tracing notes the stream's id, model and finish reasons
        if rec is not None:
            rec.stream_chunk(chunk)
        sent = _delta_chars(chunk)
        self._chars += sent
        self._chunks += sent > 0
        usage = chunk.get("usage")
        if usage:
            result = self._result
            result.usage = usage_of(usage)
            self._balancer.record_tokens(
                result.deployment, result.usage.get("total_tokens", 0), result.charge
            )
            if not chunk.get("choices") and not self._want_usage:
                return False
        return True

    async def _next(self) -> Json | None:
        """The next upstream chunk (None at the end), or MidStreamError past the deadline.

        The deadline is one timer for the whole stream: when it fires during a wait for
        upstream it cancels that wait, as ``asyncio.timeout`` would (a cancellation of the
        task's own is passed on, not turned into the cut); past it, the next chunk is
        refused, even one already received."""
        if self._cut or self._loop.time() >= self._ends_at:
            self._cut = True
            raise self._too_long()
        if self._timer is None:
            # By weak reference: a stream dropped unclosed is collected (and settled) now,
            # not kept by the loop until its deadline.
            self._timer = self._loop.call_at(self._ends_at, _expire, weakref.ref(self))
        task = asyncio.current_task(self._loop)
        assert task is not None
        cancelling = task.cancelling()
        self._waiting = task
        try:
            return await anext(self._it, None)
        except asyncio.CancelledError:
            if self._cancelled is task:
                self._cancelled = None
                if task.uncancel() <= cancelling:
                    raise self._too_long() from None
            raise
        finally:
            self._waiting = None
            if self._cancelled is task:  # the deadline's cancel, when the wait ended otherwise
                self._cancelled = None
                task.uncancel()

    def _expire(self) -> None:
        """The deadline: cut the stream (the wait for upstream in progress, else the next)."""
        self._cut = True
        task = self._waiting
        if task is not None and self._cancelled is None:
            self._cancelled = task
            task.cancel()

    def _too_long(self) -> MidStreamError:
        return MidStreamError(
            "the stream ran longer than router_settings.max_stream_duration "
            f"({self._settings.router.max_stream_duration:g}s) and was cut"
        )

    async def _finish(self) -> None:
        if self._finished:
            return
        self._finished = True
        if self._timer is not None:
            self._timer.cancel()
        try:
            await aclose(self._it)
        finally:
            charged = self._charged()
            if charged is not self._result.usage:
                self._result.billed = charged  # what reports cost it at, budget or not
            hold, budget = self._hold, self._budget
            if hold is not None and budget is not None and hold.is_open:
                await budget.settle(hold, self._result.deployment, charged)

    def _charged(self) -> dict[str, int]:
        """The usage to charge: the provider's, or an estimate of what was sent."""
        dep = self._result.deployment
        # OpenAI streams a token a chunk; the others batch tokens (~4 bytes each).
        sent = self._chunks if dep.provider in ("openai", "azure") else (self._chars + 3) // 4
        return billable_usage(
            self._result.usage,
            self._request,
            dep,
            self._settings.budget.default_max_tokens,
            max(self._chunks, sent),
        )


def _expire(ref: weakref.ref[Relay]) -> None:
    """A relay's deadline timer (see :meth:`Relay._next`)."""
    relay = ref()
    if relay is not None:
        relay._expire()


def _is_count(value: object) -> TypeGuard[int]:
    """Whether ``value`` is a token count a charge can take: an int (not a bool) above 0 (a
    prompt always has tokens; an answer of none is charged its estimate, which for an empty
    answer is a few tokens: made-up zeros must not make a request free)."""
    return type(value) is int and value > 0


def reported(usage: dict[str, int]) -> bool:
    """Whether ``usage`` holds the prompt and completion counts a charge needs."""
    return _is_count(usage.get("prompt_tokens")) and _is_count(usage.get("completion_tokens"))


def billable_usage(
    usage: dict[str, int],
    request: Json,
    deployment: Deployment,
    default_max_tokens: int,
    sent_tokens: int,
) -> dict[str, int]:
    """The usage a budget charges for an answer: the provider's when it reported prompt and
    completion as counts (:func:`reported`), else an estimate of what was sent for what it
    left out or got wrong (a count of 0, negative or not an integer): the prompt's typical
    count, and ``sent_tokens`` within the request's completion bound."""
    if reported(usage):
        return usage
    p, c = usage.get("prompt_tokens"), usage.get("completion_tokens")
    prompt = p if _is_count(p) else measure(request).typical(deployment.provider, deployment.model)
    completion = (
        c if _is_count(c) else min(completion_bound(request, default_max_tokens), sent_tokens)
    )
    return {"prompt_tokens": prompt, "completion_tokens": completion}


# Responses API stream events that carry generated text, and the final ones carrying usage.
_EVENT_DELTAS = frozenset(
    {"response.output_text.delta", "response.function_call_arguments.delta",
     "response.refusal.delta", "response.reasoning_summary_text.delta"}
)  # fmt: skip
_EVENT_ENDS = frozenset({"response.completed", "response.incomplete", "response.failed"})


class EventRelay(Relay):
    """A Responses API stream passed through from the upstream: every event goes on
    unchanged; usage (``input_tokens`` / ``output_tokens``) comes from the final event's
    response, and without it the charge is estimated as for chat. The final response is
    cached in its chat form when it has one (``chunks.response_as_chat``)."""

    def __init__(self, first: Json, it: AsyncIterator[Json], **kw: Any) -> None:
        """As :class:`Relay` (the cache ticket is used on the final event, not per chunk)."""
        self._event_ticket: Ticket | None = kw.pop("ticket", None)
        super().__init__(first, it, ticket=None, **kw)

    def _observe(self, chunk: Json) -> bool:
        kind = chunk.get("type")
        if kind in _EVENT_DELTAS:
            delta = chunk.get("delta")
            sent = len(delta) if isinstance(delta, str) else 0
            self._chars += sent
            self._chunks += sent > 0
        elif kind in _EVENT_ENDS:
            response = chunk.get("response")
            if not isinstance(response, dict):
                return True
            usage = responses_usage(response.get("usage"))
            if usage:
                result = self._result
                result.usage = usage
                self._balancer.record_tokens(
                    result.deployment, usage.get("total_tokens", 0), result.charge
                )
            ticket, cache = self._event_ticket, self._cache
            view = response_as_chat(response) if ticket is not None and cache else None
            if view is not None and ticket is not None and cache is not None:
                cache.store(ticket, view)
        return True


def responses_usage(usage: Any) -> dict[str, int]:
    """A Responses API ``usage`` as chat's integer fields (prompt, completion, total)."""
    if not isinstance(usage, dict):
        return {}
    out: dict[str, int] = {}
    for theirs, ours in (("input_tokens", "prompt_tokens"), ("output_tokens", "completion_tokens"),
                         ("total_tokens", "total_tokens")):  # fmt: skip
        v = usage.get(theirs)
        if isinstance(v, int) and not isinstance(v, bool):
            out[ours] = v
    if "total_tokens" not in out and "prompt_tokens" in out and "completion_tokens" in out:
        out["total_tokens"] = out["prompt_tokens"] + out["completion_tokens"]
    return out


class Closing:
    """``outer`` (a stream built over ``inner``) whose ``aclose`` closes ``inner`` too, so a
    wrapped relay settles its hold even when the wrapper was never read."""

    def __init__(self, outer: AsyncIterator[Json], inner: AsyncIterator[Json]) -> None:
        self._outer = outer
        self._inner = inner

    def __aiter__(self) -> Closing:
        return self

    async def __anext__(self) -> Json:
        return await self._outer.__anext__()

    async def aclose(self) -> None:
        """Close the wrapper, then the stream under it."""
        try:
            await aclose(self._outer)
        finally:
            await aclose(self._inner)


_BACKGROUND: set[asyncio.Task[None]] = set()


def _in_background(finish: Callable[[], Awaitable[None]]) -> None:
    """Run ``finish()`` as a task kept alive until it is done."""
    task = asyncio.ensure_future(finish())
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


def usage_of(usage: Any) -> dict[str, int]:
    """The integer fields of a provider's ``usage`` object (``{}`` when there is none)."""
    if not isinstance(usage, dict):
        return {}
    return {k: v for k, v in usage.items() if isinstance(v, int)}


async def aclose(it: AsyncIterator[Json]) -> None:
    """Close ``it`` if it can be closed."""
    close = getattr(it, "aclose", None)
    if close is not None:
        await close()
