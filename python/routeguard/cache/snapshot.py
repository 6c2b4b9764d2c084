"""The semantic cache's snapshot file: every entry and its vector, in one msgpack document.

Data flow: ``SemanticCache.save`` collects the live entries (least recently used first) and
their unit vectors and calls :func:`write`, which encodes one :class:`Snapshot` (a header,
the entries as arrays, the vectors as one little-endian float32 matrix in bytes), writes it
to a temporary file next to the target, fsyncs it and renames it over the target, so a
reader sees the old snapshot or the new one, never half of one. ``SemanticCache.load``
calls :func:`read` and re-inserts, in the saved order, the entries that have not expired.
Times are absolute (the cache clock's seconds), so a TTL keeps counting while the snapshot
sits on disk.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import msgspec
import numpy as np
import numpy.typing as npt

from routeguard.cache.state import CacheEntry

FORMAT: Final = "routeguard-cache-snapshot"
VERSION: Final = 1


class Record(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    """One entry as stored (its vector is the row of the same position)."""

    key: str
    partition: str
    namespace: str
    prompt: str
    response: Any
    created: float
    expires: float | None
    metadata: dict[str, Any]
    version: str


class Snapshot(msgspec.Struct, forbid_unknown_fields=True):
    """The whole file."""

    format: str
    version: int
    dim: int
    entries: list[Record]
    vectors: bytes  # len(entries) x dim float32, little-endian, row-major


_decoder = msgspec.msgpack.Decoder(Snapshot)


def write(
    path: str | os.PathLike[str],
    dim: int,
    entries: Sequence[CacheEntry],
    vectors: npt.NDArray[np.float32],
) -> None:
    """Atomically replace ``path`` with a snapshot of ``entries`` and their ``vectors``."""
    records = [
        Record(e.key, e.partition, e.namespace, e.prompt, e.response, e.created, e.expires,
               dict(e.metadata), e.version)
        for e in entries
    ]  # fmt: skip
    matrix = np.ascontiguousarray(vectors, dtype="<f4").reshape(len(entries), dim)
    try:
        data = msgspec.msgpack.encode(Snapshot(FORMAT, VERSION, dim, records, matrix.tobytes()))
    except TypeError as e:
        raise TypeError(
            f"cannot snapshot the cache: {e} (responses and metadata must be "
            "msgpack-encodable: dicts, lists, strings, numbers, bytes)"
        ) from e
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(target.parent)


def read(path: str | os.PathLike[str]) -> tuple[int, list[CacheEntry], npt.NDArray[np.float32]]:
    """The dimension, entries (vector ids not yet assigned) and vectors saved at ``path``."""
    raw = Path(path).read_bytes()
    try:
        snap = _decoder.decode(raw)
    except msgspec.DecodeError as e:
        raise ValueError(f"{os.fspath(path)!r} is not a routeguard cache snapshot: {e}") from e
    if snap.format != FORMAT or snap.version != VERSION:
        raise ValueError(f"{os.fspath(path)!r}: expected {FORMAT} version {VERSION}, got "
                         f"{snap.format} version {snap.version}")  # fmt: skip
    n = len(snap.entries)
    if len(snap.vectors) != n * snap.dim * 4:
        raise ValueError(f"{os.fspath(path)!r} is truncated: {n} entries of dimension "
                         f"{snap.dim} need {n * snap.dim * 4} vector bytes, "
                         f"found {len(snap.vectors)}")  # fmt: skip
    vectors = np.frombuffer(snap.vectors, dtype="<f4").astype(np.float32).reshape(n, snap.dim)
    entries = [
        CacheEntry(r.key, r.partition, r.namespace, r.prompt, r.response, r.created, r.expires,
                   0, r.metadata, r.version)
        for r in snap.entries
    ]  # fmt: skip
    return snap.dim, entries, vectors


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
