"""A raw HTTP/1.1 upstream for wire-level tests of ``routeguard.providers.http``.

``WireServer`` is an asyncio TCP (or TLS) server that parses each request itself (request
line, headers, a Content-Length or chunked body) and hands it to the test's handler as an
``Exchange``; the handler writes the exact response bytes it wants, in as many writes and
pauses as it likes, or hangs up. The server records every request and counts the
connections it accepted, so keep-alive and reconnects can be asserted. ``response``,
``json_response``, ``chunked`` and ``framed_writes`` build response bytes, ``answer`` and
``silent`` are ready-made handlers, ``issue_ca``/``issue_cert`` make throwaway TLS material.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

REASONS = {
    100: "Continue",
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    429: "Too Many Requests",
}


@dataclass
class Request:
    """One request as it arrived on the wire."""

    line: str  # the request line, e.g. "POST /v1/x?y=1 HTTP/1.1"
    headers: list[tuple[str, str]]  # in order, names as sent
    body: bytes
    conn: int  # which accepted connection carried it (0-based)

    @property
    def method(self) -> str:
        """The request method."""
        return self.line.split(" ", 2)[0]

    @property
    def target(self) -> str:
        """The request target (path and query) exactly as sent."""
        return self.line.split(" ", 2)[1]

    def header(self, name: str) -> str | None:
        """The first value of a header, looked up case-insensitively."""
        values = self.header_all(name)
        return values[0] if values else None

    def header_all(self, name: str) -> list[str]:
        """Every value sent under a header name (case-insensitive)."""
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Exchange:
    """A request and the connection to answer it on."""

    request: Request
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hung_up: bool = False

    async def send(self, *pieces: bytes, pause: float = 0.0) -> None:
        """Write each piece as its own TCP write, drained, with ``pause`` seconds between."""
        for i, piece in enumerate(pieces):
            if i and pause:
                await asyncio.sleep(pause)
            self.writer.write(piece)
            await self.writer.drain()

    async def hang_up(self, *, reset: bool = False) -> None:
        """Close the connection; ``reset`` sends a TCP RST instead of a FIN."""
        self.hung_up = True
        if self.writer.transport.is_closing():  # the server is shutting down
            return
        if reset:
            sock = self.writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.writer.transport.abort()
            return
        self.writer.close()
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            await self.writer.wait_closed()

    async def until_client_hangs_up(self) -> None:
        """Wait until the client closes the connection (reading and dropping anything)."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass


Handler = Callable[[Exchange], Awaitable[None]]


class WireServer:
    """A raw HTTP/1.1 server on 127.0.0.1 answering each request through ``handler``."""

    def __init__(self, handler: Handler, *, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[Request] = []
        self.connections = 0
        # One per accepted connection, set once that connection is over on the server side.
        self.conn_done: list[asyncio.Event] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def url(self) -> str:
        """``http(s)://127.0.0.1:PORT`` of the server."""
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Listen on an OS-chosen port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening, drop every open connection and end every handler."""
        if self._server is not None:
            self._server.close()
        for w in list(self._writers):
            w.transport.abort()  # each handler then sees the end of its stream and returns
        if self._tasks:
            _, late = await asyncio.wait(list(self._tasks), timeout=1.0)
            for t in late:  # a handler still sleeping
                t.cancel()
            if late:
                await asyncio.wait(late)
        if self._server is not None:
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        conn = self.connections
        self.connections += 1
        done = asyncio.Event()
        self.conn_done.append(done)
        try:
            while True:
                request = await _read_request(reader, conn)
                if request is None:
                    break
                self.requests.append(request)
                exchange = Exchange(request, reader, writer)
                await self.handler(exchange)
                if exchange.hung_up:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            # Only close() cancels this task, its own; ending quietly keeps asyncio from
            # logging the cancelled connection callback as an error.
            pass
        finally:
            done.set()
            self._writers.discard(writer)
            writer.transport.abort()
            self._tasks.discard(task)


async def _read_request(reader: asyncio.StreamReader, conn: int) -> Request | None:
    """Read one request off the connection, or None at a clean end of stream."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise
        return None
    line, *rest = head[:-4].decode("latin-1").split("\r\n")
    headers = []
    for raw in rest:
        name, _, value = raw.partition(":")
        headers.append((name.strip(), value.strip()))
    names = {k.lower(): v for k, v in headers}
    if "chunked" in names.get("transfer-encoding", "").lower():
        body = bytearray()
        while True:
            size = int((await reader.readline()).split(b";")[0].strip(), 16)
            if size == 0:
                while (await reader.readline()).strip():  # trailers
                    pass
                break
            body += await reader.readexactly(size)
            await reader.readexactly(2)
        data = bytes(body)
    else:
        data = await reader.readexactly(int(names.get("content-length", "0")))
    return Request(line, headers, data, conn)


Serve = Callable[..., Awaitable[WireServer]]


@contextlib.asynccontextmanager
async def raw_servers() -> AsyncIterator[Serve]:
    """A starter of raw servers (``await serve(handler, tls=None)``); all stop on exit."""
    servers: list[WireServer] = []

    async def start(handler: Handler, *, tls: ssl.SSLContext | None = None) -> WireServer:
        server = WireServer(handler, tls=tls)
        await server.start()
        servers.append(server)
        return server

    try:
        yield start
    finally:
        for s in servers:
            await s.close()


def response(
    status: int = 200,
    body: bytes = b"",
    headers: Iterable[tuple[str, str]] = (),
    *,
    length: bool = True,
) -> bytes:
    """Response bytes: status line, the headers given, Content-Length unless ``length`` is
    False (chunked or close-delimited bodies, 204), then ``body`` as is."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Whatever')}"]
    lines += [f"{k}: {v}" for k, v in headers]
    if length:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def chunked(pieces: Sequence[bytes], *, ext: str = "", trailers: str = "") -> list[bytes]:
    """Each piece as one chunk (``ext`` after the size), then the last chunk with ``trailers``
    (``"Name: value\\r\\n"`` lines); one list item per chunk, so they can be written apart."""
    out = [f"{len(p):x}{ext}\r\n".encode() + p + b"\r\n" for p in pieces if p]
    out.append(b"0\r\n" + trailers.encode() + b"\r\n")
    return out


def answer(wire: bytes | Callable[[Request], bytes]) -> Handler:
    """A handler writing the same bytes (or bytes made from the request) to every request."""

    async def handle(x: Exchange) -> None:
        await x.send(wire(x.request) if callable(wire) else wire)

    return handle


def json_response(obj: Any, *extra: tuple[str, str]) -> bytes:
    """A 200 with a Content-Length JSON body."""
    return response(200, msgspec.json.encode(obj), [("Content-Type", "application/json"), *extra])


async def silent(x: Exchange) -> None:
    """Never answer: hold the connection until the client gives up."""
    await x.until_client_hangs_up()
    await x.hang_up()


def framed_writes(body_pieces: list[bytes], framing: str, *headers: tuple[str, str]) -> list[bytes]:
    """A 200 response as separate writes: the head, then the body piece by piece framed by
    ``framing``: "length", "chunked" (one chunk per piece, then the last chunk) or "close"
    (no length: the body ends when the server hangs up)."""
    body = b"".join(body_pieces)
    if framing == "chunked":
        head = response(200, headers=[*headers, ("Transfer-Encoding", "chunked")], length=False)
        return [head, *chunked(body_pieces)]
    if framing == "length":
        head = response(200, headers=[*headers, ("Content-Length", str(len(body)))], length=False)
    else:
        head = response(200, headers=[*headers, ("Connection", "close")], length=False)
    return [head, *(p for p in body_pieces if p)]


# --------------------------------------------------------------------------- TLS material


@dataclass
class Issued:
    """A certificate and its private key (which signs certificates when it is a CA's)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def write(self, directory: Path, stem: str) -> tuple[Path, Path]:
        """Write ``stem.pem`` (certificate) and ``stem.key`` (key); returns both paths."""
        cert_path = directory / f"{stem}.pem"
        key_path = directory / f"{stem}.key"
        cert_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            self.key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        return cert_path, key_path


def _validity(builder: x509.CertificateBuilder) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return builder.not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(
        now + datetime.timedelta(days=1)
    )


def issue_ca(common_name: str = "routeguard wire-test CA") -> Issued:
    """A throwaway self-signed certificate authority."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    return Issued(_validity(builder).sign(key, hashes.SHA256()), key)


def issue_cert(ca: Issued, names: Sequence[str]) -> Issued:
    """A server certificate signed by ``ca`` for ``names`` (DNS names or IP addresses)."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()),
            critical=False,
        )
    )
    return Issued(_validity(builder).sign(ca.key, hashes.SHA256()), key)


def server_context(issued: Issued, directory: Path, stem: str) -> ssl.SSLContext:
    """A server-side SSLContext presenting ``issued``."""
    cert_path, key_path = issued.write(directory, stem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert_path, key_path)
    return ctx
