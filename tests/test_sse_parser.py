"""The native event-stream framing (``_core.SseParser``) against a plain reading of the
rules it implements, on arbitrary bytes split anywhere: what ``SseStream.events`` yields."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from routeguard._native import core
from routeguard.providers import http


def _reference(body: bytes) -> tuple[list[tuple[str, bytes]], bool]:
    """The rules, read line by line over the whole body at once: the events, and whether an
    event name that is not UTF-8 stopped the reading (at its line)."""
    out: list[tuple[str, bytes]] = []
    event, data = "", list[bytes]()
    lines = body.split(b"\n")
    if not lines[-1] and len(lines) > 1:
        lines.pop()  # the body ended with its last line's LF
    for raw in lines:
        line = raw.rstrip(b"\r")
        if not line:
            if data:
                out.append((event, b"\n".join(data)))
            event, data = "", []
            continue
        if line.startswith(b":"):
            continue
        name, _, value = line.partition(b":")
        value = value[1:] if value.startswith(b" ") else value
        if name == b"data":
            data.append(value)
        elif name == b"event":
            try:
                event = value.decode()
            except UnicodeDecodeError:
                return out, True
    if data:
        out.append((event, b"\n".join(data)))
    return out, False


def _parse(chunks: list[bytes]) -> tuple[list[tuple[str, bytes]], bool]:
    parser = core.SseParser()
    got: list[tuple[str, bytes]] = []
    try:
        for chunk in chunks:
            got += parser.feed(chunk)
        got += parser.finish()
    except UnicodeDecodeError as exc:
        return got + exc.events, True  # type: ignore[attr-defined]
    return got, False


_atoms = st.sampled_from(
    [
        b"data",
        b"event",
        b"id",
        b":",
        b" ",
        b"\r",
        b"\n",
        b"\r\n",
        b"\n\n",
        b"x",
        b"{}",
        b"\xc3\xa9",
        b"\xff",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_atoms, max_size=40).map(b"".join), st.lists(st.integers(0, 200), max_size=6))
def test_any_bytes_split_anywhere_frame_as_the_rules_say(body: bytes, cuts: list[int]) -> None:
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert _parse(chunks) == _reference(body)


_line = st.binary(max_size=30).filter(lambda b: b"\n" not in b and b"\r" not in b)
_names = st.sampled_from(["", "message", "ping"])
_event = st.tuples(_names, st.lists(_line, min_size=1, max_size=3))


@settings(max_examples=200, deadline=None)
@given(st.lists(_event, max_size=5), st.sampled_from([b"\n", b"\r\n"]), st.integers(1, 7))
def test_written_events_come_back_whole(
    events: list[tuple[str, list[bytes]]], end: bytes, size: int
) -> None:
    body = b""
    for name, lines in events:
        body += b": note" + end
        if name:
            body += b"event: " + name.encode() + end
        body += b"".join(b"data: " + line + end for line in lines) + end
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    assert _parse(chunks) == ([(n, b"\n".join(ls)) for n, ls in events], False)


class _Resp:
    """An upstream response that hands out the given chunks."""

    status = 200

    def __init__(self, chunks: list[bytes]) -> None:
        self.headers: dict[str, str] = {}
        self._chunks = list(chunks)
        self.closed = False

    async def next_chunk(self, timeout: float) -> bytes | None:
        return self._chunks.pop(0) if self._chunks else None

    def close(self) -> None:
        self.closed = True


async def _stream(chunks: list[bytes]) -> tuple[list[Any], BaseException | None, bool]:
    resp = _Resp(chunks)
    got: list[Any] = []
    try:
        async for item in http.SseStream(resp, "http://u", 5.0).events():  # type: ignore[arg-type]
            got.append(item)
    except Exception as exc:
        return got, exc, resp.closed
    return got, None, resp.closed


@pytest.mark.parametrize(
    ("chunks", "before"),
    [
        ([b"data: a\n\nevent: \xff\ndata: b\n\n"], [("", b"a")]),  # after events of its chunk
        ([b"data: a\n\n", b"event: \xff\n\ndata: b\n\n"], [("", b"a")]),  # never dispatched
        ([b"event: \xff\nevent: ok\ndata: b\n\n"], []),  # replaced before any data
        ([b"data: a\n\nevent: \xff"], [("", b"a")]),  # the body's unended last line
    ],
    ids=["same-chunk", "no-data", "replaced", "last-line"],
)
async def test_a_stream_with_an_event_name_not_utf8_raises_at_its_line(
    chunks: list[bytes], before: list[Any]
) -> None:
    """As the Python framing did (review): the events before the line, then the error."""
    got, exc, closed = await _stream(chunks)
    assert got == before
    assert isinstance(exc, UnicodeDecodeError)
    assert closed


def test_an_event_name_that_is_not_utf8_raises_as_decoding_did() -> None:
    parser = core.SseParser()
    try:
        parser.feed(b"event: \xff\ndata: 1\n\n")
    except UnicodeDecodeError:
        return
    raise AssertionError("no UnicodeDecodeError")
