"""The HTTP client every provider shares: one pooled aiohttp session per event loop, JSON
POST and Server-Sent-Events streaming, and the mapping of transport failures (refused,
reset, timed out) onto retryable ProviderErrors.

Provider modules build URL, headers and body; this module moves bytes and never retries
(retries live only in ``routeguard.fallback``). Its errors tell callers what failed, never
where: the upstream's address goes only into ``detail`` (for logs), without userinfo.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import msgspec
import yarl

from routeguard import scrub
from routeguard.errors import ProviderError, UpstreamConnectionError, UpstreamTimeout
from routeguard.observe import spans

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()

_sessions: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, aiohttp.ClientSession] = (
    weakref.WeakKeyDictionary()
)


def session() -> aiohttp.ClientSession:
    """The pooled client session of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    s = _sessions.get(loop)
    if s is None or s.closed:
        connector = aiohttp.TCPConnector(
            limit=0,  # no global cap: per-deployment concurrency is the router's business
            limit_per_host=0,
            ttl_dns_cache=300,
            keepalive_timeout=60,
            enable_cleanup_closed=False,
        )
        s = aiohttp.ClientSession(
            connector=connector,
            json_serialize=lambda o: _encoder.encode(o).decode(),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )
        _sessions[loop] = s
    return s


async def close_session() -> None:
    """Close the running loop's session (on server shutdown)."""
    loop = asyncio.get_running_loop()
    s = _sessions.pop(loop, None)
    if s is not None and not s.closed:
        await s.close()


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


def _timeout(seconds: float) -> aiohttp.ClientTimeout:
    # Connecting gets at most half the attempt, so a host that never accepts is reported
    # as a connect failure (the upstream's health) before the attempt's own timeout fires,
    # which could as well be a long answer.
    return aiohttp.ClientTimeout(total=seconds, connect=min(seconds / 2, 10.0))


async def post_json(
    url: str, headers: Mapping[str, str], body: Any, timeout: float
) -> HttpResponse:
    """POST a JSON body (an object, or bytes already encoded) and read the whole response."""
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    url, headers = _credentials(url, headers)
    sent = {**headers, "content-type": "application/json"}
    if spans.recorder is not None:
        spans.recorder.inject(sent)  # the attempt's traceparent
    try:
        async with session().post(
            _target(url),
            data=data,
            headers=sent,
            timeout=_timeout(timeout),
        ) as resp:
            raw = await resp.read()
            return HttpResponse(resp.status, resp.headers, raw)
    except aiohttp.ConnectionTimeoutError:
        raise _timed_out("cannot connect to the upstream in time", url) from None
    except TimeoutError:
        # Connected, but the whole answer took longer than the attempt allows: as likely
        # the caller's long answer as a slow upstream, so not a health failure.
        what = f"no complete answer within {timeout:g}s"
        raise _timed_out(what, url, health=False) from None
    except aiohttp.ClientError as exc:
        raise _unreachable("cannot reach the upstream", url, exc) from None


class SseStream:
    """An open SSE response: check ``status`` first, then iterate ``events()``."""

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url
        self.status = resp.status
        self.headers = resp.headers

    async def body(self) -> HttpResponse:
        """Read the rest as a plain body (for error statuses)."""
        try:
            raw = await self._resp.read()
        finally:
            self._resp.release()
        return HttpResponse(self.status, self.headers, raw)

    async def events(self) -> AsyncIterator[tuple[str, bytes]]:
        """Yield ``(event, data)`` pairs; ``event`` is "" when the server sent none."""
        event = ""
        data: list[bytes] = []
        try:
            async for raw_line in self._resp.content:
                line = raw_line.rstrip(b"\r\n")
                if not line:
                    if data:
                        yield event, b"\n".join(data)
                    event, data = "", []
                    continue
                if line.startswith(b":"):
                    continue
                name, _, value = line.partition(b":")
                if value.startswith(b" "):
                    value = value[1:]
                if name == b"data":
                    data.append(value)
                elif name == b"event":
                    event = value.decode()
            if data:
                yield event, b"\n".join(data)
        except TimeoutError:
            raise _timed_out("the upstream stream stalled", self._url) from None
        except aiohttp.ClientError as exc:
            raise _unreachable("the upstream stream broke", self._url, exc) from None
        finally:
            self._resp.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they arrive, for binary stream framings (AWS event-stream)."""
        try:
            async for chunk in self._resp.content.iter_any():
                yield chunk
        except TimeoutError:
            raise _timed_out("the upstream stream stalled", self._url) from None
        except aiohttp.ClientError as exc:
            raise _unreachable("the upstream stream broke", self._url, exc) from None
        finally:
            self._resp.release()

    def close(self) -> None:
        """Drop the connection (when the consumer stops early)."""
        self._resp.close()


async def open_sse(url: str, headers: Mapping[str, str], body: Any, timeout: float) -> SseStream:
    """POST a JSON body and open its SSE response; ``timeout`` bounds the wait for headers
    and each gap between chunks, not the whole stream."""
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    url, headers = _credentials(url, headers)
    # accept: unless the format streams otherwise (Bedrock sets its own)
    sent = {"accept": "text/event-stream", **headers, "content-type": "application/json"}
    if spans.recorder is not None:
        spans.recorder.inject(sent)  # the attempt's traceparent
    try:
        resp = await session().post(
            _target(url),
            data=data,
            headers=sent,
            timeout=aiohttp.ClientTimeout(
                total=None, connect=min(timeout, 10.0), sock_read=timeout
            ),
        )
    except TimeoutError:  # no first byte (or no connection) in time: the upstream's health
        raise _timed_out(f"no first byte within {timeout:g}s", url) from None
    except aiohttp.ClientError as exc:
        raise _unreachable("cannot reach the upstream", url, exc) from None
    return SseStream(resp, url)


def _target(url: str) -> str | yarl.URL:
    """What to hand aiohttp: a URL holding percent-escapes (a Bedrock model id's ``%3A``)
    goes as is, since re-quoting it would change the path a SigV4 signature covers."""
    return yarl.URL(url, encoded=True) if "%" in url else url


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
    auth = aiohttp.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
    return bare, {**headers, "authorization": auth.encode()}


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
