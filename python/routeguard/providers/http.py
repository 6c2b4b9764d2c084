"""The HTTP client every provider shares: pooled keep-alive connections per event loop
(:mod:`routeguard.providers.h1`), JSON POST and Server-Sent-Events streaming, and the
mapping of transport failures (refused, reset, timed out, malformed) onto retryable
ProviderErrors.

Provider modules build URL, headers and body; this module moves bytes and never retries
(retries live only in ``routeguard.fallback``; the transport never sends a request twice).
Its errors tell callers what failed, never where: the upstream's address goes only into
``detail`` (for logs), without userinfo.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import msgspec

from routeguard import scrub
from routeguard._native import core
from routeguard.errors import ProviderError, UpstreamConnectionError, UpstreamTimeout
from routeguard.observe import spans
from routeguard.providers import h1

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


async def close_session() -> None:
    """Close the running loop's pooled connections (on server shutdown)."""
    h1.close_pool()


@dataclass(slots=True)
class HttpResponse:
    """A complete upstream response."""

    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body decoded as JSON (None if it is not JSON)."""
        try:
            return _decoder.decode(self.body)
        except msgspec.DecodeError:
            return None


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), if any."""
    v = headers.get("retry-after") or headers.get("Retry-After")
    if v is None:
        return None
    try:
        return max(0.0, float(v))
    except ValueError:
        return None


def _prepare(
    url: str, headers: Mapping[str, str], body: Any, accept: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    try:
        url, headers = _credentials(url, headers)
    except ValueError:  # urlsplit's "Invalid IPv6 URL"; its text may hold the userinfo
        raise h1.BadHeader("not a valid URL") from None
    # Names in lower case, so a caller's "Accept" or "Content-Type" replaces ours.
    sent = {"accept": accept} if accept is not None else {}
    sent.update((k.lower(), v) for k, v in headers.items())
    sent["content-type"] = "application/json"
    if spans.recorder is not None:
        spans.recorder.inject(sent)  # the attempt's traceparent
    return url, sent, data


async def post_json(
    url: str, headers: Mapping[str, str], body: Any, timeout: float
) -> HttpResponse:
    """POST a JSON body (an object, or bytes already encoded) and read the whole response."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        url, sent, data = _prepare(url, headers, body)
        # Connecting gets at most half the attempt, so a host that never accepts is
        # reported as a connect failure (the upstream's health) before the attempt's own
        # timeout fires, which could as well be a long answer.
        resp = await h1.pool(loop).request(
            url, sent, data, connect_timeout=min(timeout / 2, 10.0), head_deadline=deadline
        )
        raw = await resp.read(deadline)
        return HttpResponse(resp.status, resp.headers, raw)
    except h1.ConnectTimeout:
        raise _timed_out("cannot connect to the upstream in time", url) from None
    except TimeoutError:
        # Connected, but the whole answer took longer than the attempt allows: as likely
        # the caller's long answer as a slow upstream, so not a health failure.
        what = f"no complete answer within {timeout:g}s"
        raise _timed_out(what, url, health=False) from None
    except h1.BadHeader as exc:
        raise _unbuildable(exc) from None
    except (OSError, h1.BadResponse) as exc:
        raise _unreachable("cannot reach the upstream", url, exc) from None


class SseStream:
    """An open SSE response: check ``status`` first, then iterate ``events()``."""

    def __init__(self, resp: h1.Response, url: str, timeout: float) -> None:
        self._resp = resp
        self._url = url
        self._timeout = timeout
        self.status = resp.status
        self.headers: Mapping[str, str] = resp.headers

    async def body(self) -> HttpResponse:
        """Read the rest as a plain body (for error statuses)."""
        try:
            raw = await self._resp.read(asyncio.get_running_loop().time() + self._timeout)
        except TimeoutError:
            raise _timed_out("the upstream stream stalled", self._url) from None
        except (OSError, h1.BadResponse) as exc:
            raise _unreachable("the upstream stream broke", self._url, exc) from None
        return HttpResponse(self.status, self.headers, raw)

    async def events(self) -> AsyncIterator[tuple[str, bytes]]:
        """Yield ``(event, data)`` pairs; ``event`` is "" when the server sent none (the
        framing is the native core's ``SseParser``: lines end with LF or CRLF, a blank line
        ends an event with data, ``:`` starts a comment, ``data`` lines join with LF)."""
        parser = core.SseParser()
        with self._reading():
            try:
                while (chunk := await self._resp.next_chunk(self._timeout)) is not None:
                    for item in parser.feed(chunk):
                        yield item
                for item in parser.finish():
                    yield item
            except UnicodeDecodeError as exc:  # an event name that is not UTF-8: what came first
                for item in exc.events:  # type: ignore[attr-defined]  # (see _core.SseParser)
                    yield item
                raise

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, for binary stream framings (AWS event-stream)."""
        with self._reading():
            while (chunk := await self._resp.next_chunk(self._timeout)) is not None:
                yield chunk

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        """Reading the body: its failures as ProviderErrors, the response closed after."""
        try:
            yield
        except TimeoutError:
            raise _timed_out("the upstream stream stalled", self._url) from None
        except (OSError, h1.BadResponse) as exc:
            raise _unreachable("the upstream stream broke", self._url, exc) from None
        finally:
            self._resp.close()

    def close(self) -> None:
        """Done with the stream: its connection is reused if it ended, else dropped."""
        self._resp.close()


async def open_sse(url: str, headers: Mapping[str, str], body: Any, timeout: float) -> SseStream:
    """POST a JSON body and open its SSE response; ``timeout`` bounds the wait for headers
    and each gap between chunks, not the whole stream."""
    # accept: unless the format streams otherwise (Bedrock sets its own)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        url, sent, data = _prepare(url, headers, body, accept="text/event-stream")
        resp = await h1.pool(loop).request(
            url, sent, data, connect_timeout=min(timeout, 10.0), head_deadline=deadline
        )
    except TimeoutError:  # no first byte (or no connection) in time: the upstream's health
        raise _timed_out(f"no first byte within {timeout:g}s", url) from None
    except h1.BadHeader as exc:
        raise _unbuildable(exc) from None
    except (OSError, h1.BadResponse) as exc:
        raise _unreachable("cannot reach the upstream", url, exc) from None
    return SseStream(resp, url, timeout)


def decode(data: bytes, what: str) -> Any:
    """Decode a JSON payload from upstream, as a ProviderError if it is not JSON."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        raise ProviderError(f"{what}: upstream sent invalid JSON") from None


def _credentials(url: str, headers: Mapping[str, str]) -> tuple[str, Mapping[str, str]]:
    """Register the upstream for scrubbing, and move ``user:pass@`` out of the URL into a
    Basic ``authorization`` header (unless the deployment sends its own key there)."""
    scrub.remember_upstream(url)
    if "@" not in url:
        return url, headers
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, headers
    netloc = parts.netloc.rpartition("@")[2]
    bare = urlunsplit(parts._replace(netloc=netloc))
    if any(k.lower() == "authorization" for k in headers):
        return bare, headers
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return bare, {**headers, "authorization": f"Basic {token}"}


def _unbuildable(exc: h1.BadHeader) -> ProviderError:
    # A header from configuration or a client that would break the request's framing.
    return ProviderError(f"the upstream request cannot be sent: {exc}", health=False)


def _timed_out(what: str, url: str, *, health: bool | None = None) -> UpstreamTimeout:
    # Only scheme://host:port in the detail: userinfo, paths and queries can carry keys.
    return UpstreamTimeout(what, health=health, detail=f"{what} ({scrub.safe_url(url)})")


def _unreachable(what: str, url: str, exc: BaseException) -> UpstreamConnectionError:
    # The OS's reason names the address ("Connect call failed ('10.0.0.5', 8000)"), so the
    # caller gets the exception's kind only and the log gets the rest.
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else ""
    detail = f"{what} at {scrub.safe_url(url)}: {type(exc).__name__}"
    return UpstreamConnectionError(
        f"{what} ({type(exc).__name__})",
        detail=scrub.scrub(detail + (f" ({reason})" if reason else "")),
    )
