"""The AWS event-stream framing (``application/vnd.amazon.eventstream``), decoded.

Bedrock's ConverseStream answers with binary messages, each: a 12-byte prelude (total
length, headers length, both big-endian uint32, then the CRC32 of those 8 bytes), the
headers, the payload, and the CRC32 of everything before it. Headers are a 1-byte name
length, the name, a 1-byte value type and the value (strings: a 2-byte length first).
:class:`EventStreamDecoder` takes the body in whatever chunks the network delivers and
yields whole :class:`Message` objects, checking both CRCs; a corrupt frame raises
:class:`~routeguard.errors.ProviderError` (the connection cannot be resynchronised).

Written here rather than taken from botocore so streaming works without the optional
``bedrock`` extra (with a Bedrock API key); the tests check it against botocore's parser.
"""

from __future__ import annotations

import struct
import uuid
import zlib
from dataclasses import dataclass
from typing import Any

from routeguard.errors import ProviderError

_PRELUDE = 12
_CRC = 4
# AWS caps a message at 16 MiB and its headers at 128 KiB; anything larger is corruption.
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024

HeaderValue = bool | int | bytes | str | uuid.UUID


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded event-stream message."""

    headers: dict[str, HeaderValue]
    payload: bytes

    def header(self, name: str) -> str:
        """A string header's value ("" when absent or not a string)."""
        v = self.headers.get(name)
        return v if isinstance(v, str) else ""


def _corrupt(what: str) -> ProviderError:
    return ProviderError(f"bedrock stream: corrupt event-stream frame ({what})")


# value type -> (struct format of a fixed-size value, its size); None: length-prefixed
_FIXED: dict[int, tuple[str, int]] = {2: (">b", 1), 3: (">h", 2), 4: (">i", 4), 5: (">q", 8),
                                      8: (">q", 8)}  # fmt: skip


def parse_headers(data: bytes | memoryview) -> dict[str, HeaderValue]:
    """The headers block of one message."""
    view = memoryview(data)
    out: dict[str, HeaderValue] = {}
    i = 0
    n = len(view)
    try:
        while i < n:
            name_len = view[i]
            name = bytes(view[i + 1 : i + 1 + name_len]).decode("utf-8")
            i += 1 + name_len
            kind = view[i]
            i += 1
            value: Any
            if kind == 0:
                value = True
            elif kind == 1:
                value = False
            elif kind in _FIXED:
                fmt, size = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, view, i)
                i += size
            elif kind in (6, 7):
                (length,) = struct.unpack_from(">H", view, i)
                raw = bytes(view[i + 2 : i + 2 + length])
                if len(raw) != length:
                    raise _corrupt("header value runs past the headers")
                value = raw.decode("utf-8") if kind == 7 else raw
                i += 2 + length
            elif kind == 9:
                value = uuid.UUID(bytes=bytes(view[i : i + 16]))
                i += 16
            else:
                raise _corrupt(f"unknown header value type {kind}")
            if i > n:
                raise _corrupt("header runs past the headers")
            out[name] = value
    except (IndexError, struct.error, UnicodeDecodeError, ValueError):
        raise _corrupt("malformed headers") from None
    return out


class EventStreamDecoder:
    """Bytes in (any chunking), whole messages out, CRCs checked."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (none while a message is still partial)."""
        self._buf += data
        out: list[Message] = []
        while len(self._buf) >= _PRELUDE:
            total, headers_len, prelude_crc = struct.unpack_from(">III", self._buf, 0)
            if zlib.crc32(memoryview(self._buf)[:8]) != prelude_crc:
                raise _corrupt("prelude CRC mismatch")
            if total > MAX_MESSAGE or headers_len > MAX_HEADERS:
                raise _corrupt("message too large")
            if total < _PRELUDE + headers_len + _CRC:
                raise _corrupt("lengths do not add up")
            if len(self._buf) < total:
                break
            frame = memoryview(self._buf)[:total]
            (message_crc,) = struct.unpack_from(">I", frame, total - _CRC)
            if zlib.crc32(frame[: total - _CRC]) != message_crc:
                frame.release()
                raise _corrupt("message CRC mismatch")
            headers = parse_headers(frame[_PRELUDE : _PRELUDE + headers_len])
            payload = bytes(frame[_PRELUDE + headers_len : total - _CRC])
            frame.release()
            del self._buf[:total]
            out.append(Message(headers, payload))
        return out
