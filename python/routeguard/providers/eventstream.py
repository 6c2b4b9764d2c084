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
_PRELUDE_FIELDS = struct.Struct(">III")
_CRC_FIELD = struct.Struct(">I")
_SEEN_MAX = 32
# AWS caps a message at 16 MiB and its headers at 128 KiB; anything larger is corruption.
MAX_MESSAGE = 16 * 1024 * 1024
MAX_HEADERS = 128 * 1024

HeaderValue = bool | int | bytes | str | uuid.UUID


@dataclass(frozen=True, slots=True)
class Message:
    """One decoded event-stream message (``headers`` may be shared between messages of a
    stream: read it, never change it)."""

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


def parse_headers(data: bytes) -> dict[str, HeaderValue]:
    """The headers block of one message."""
    out: dict[str, HeaderValue] = {}
    i = 0
    n = len(data)
    try:
        while i < n:
            name_end = i + 1 + data[i]
            name = data[i + 1 : name_end].decode("utf-8")
            kind = data[name_end]
            i = name_end + 1
            value: Any
            if kind == 7 or kind == 6:
                end = i + 2 + int.from_bytes(data[i : i + 2], "big")
                raw = data[i + 2 : end]
                value = raw.decode("utf-8") if kind == 7 else raw
                i = end
            elif kind == 0 or kind == 1:
                value = kind == 0
            elif kind in _FIXED:
                fmt, size = _FIXED[kind]
                (value,) = struct.unpack_from(fmt, data, i)
                i += size
            elif kind == 9:
                value = uuid.UUID(bytes=data[i : i + 16])
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

    __slots__ = ("_buf", "_seen")

    def __init__(self) -> None:
        self._buf = bytearray()
        # A stream repeats a handful of header blocks (one per event type): parsed once each.
        self._seen: dict[bytes, dict[str, HeaderValue]] = {}

    @property
    def pending(self) -> int:
        """Bytes received that do not yet make a whole message."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[Message]:
        """The messages ``data`` completes (none while a message is still partial)."""
        buf = self._buf
        buf += data
        out: list[Message] = []
        pos, end_of_data = 0, len(buf)
        while end_of_data - pos >= _PRELUDE:
            total, headers_len, prelude_crc = _PRELUDE_FIELDS.unpack_from(buf, pos)
            if zlib.crc32(buf[pos : pos + 8]) != prelude_crc:
                raise _corrupt("prelude CRC mismatch")
            if total > MAX_MESSAGE or headers_len > MAX_HEADERS:
                raise _corrupt("message too large")
            if total < _PRELUDE + headers_len + _CRC:
                raise _corrupt("lengths do not add up")
            if end_of_data - pos < total:
                break
            end = pos + total
            (message_crc,) = _CRC_FIELD.unpack_from(buf, end - _CRC)
            if zlib.crc32(buf[pos : end - _CRC]) != message_crc:
                raise _corrupt("message CRC mismatch")
            start = pos + _PRELUDE
            block = bytes(buf[start : start + headers_len])
            headers = self._seen.get(block)
            if headers is None:
                headers = parse_headers(block)
                if len(self._seen) < _SEEN_MAX:
                    self._seen[block] = headers
            out.append(Message(headers, bytes(buf[start + headers_len : end - _CRC])))
            pos = end
        if pos:
            del buf[:pos]
        return out
