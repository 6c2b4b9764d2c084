"""The native event-stream framing (``_core.SseParser``) against a plain reading of the
rules it implements, on arbitrary bytes split anywhere: what ``SseStream.events`` yields."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from routeguard._native import core


def _reference(body: bytes) -> list[tuple[str, bytes]]:
    """The rules, read line by line over the whole body at once."""
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
            event = value.decode()
    if data:
        out.append((event, b"\n".join(data)))
    return out


def _parse(chunks: list[bytes]) -> list[tuple[str, bytes]]:
    parser = core.SseParser()
    got = [item for chunk in chunks for item in parser.feed(chunk)]
    return got + parser.finish()


_atoms = st.sampled_from(
    [b"data", b"event", b"id", b":", b" ", b"\r", b"\n", b"\r\n", b"\n\n", b"x", b"{}", b"\xc3\xa9"]
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
    assert _parse(chunks) == [(n, b"\n".join(ls)) for n, ls in events]


def test_an_event_name_that_is_not_utf8_raises_as_decoding_did() -> None:
    parser = core.SseParser()
    try:
        parser.feed(b"event: \xff\ndata: 1\n\n")
    except UnicodeDecodeError:
        return
    raise AssertionError("no UnicodeDecodeError")
