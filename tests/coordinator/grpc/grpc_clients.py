"""Test clients for the gRPC front end: the real grpcio client (run in a worker thread
via trio.to_thread, since grpcio's client is blocking) and a raw h2 client for the
protocol corners grpcio never produces."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NO_PROXY = [("grpc.enable_http_proxy", 0)]


@dataclass
class Reply:
    code: grpc.StatusCode
    details: str
    body: bytes | None
    trailing: dict[str, str] = field(default_factory=dict)


def grpc_call(
    channel: grpc.Channel,
    path: str,
    request: bytes,
    *,
    metadata: Sequence[tuple[str, str]] = (),
    timeout: float = 10.0,
    compression: grpc.Compression | None = None,
) -> Reply:
    """One unary call with raw bytes in and out (blocking: run it in a thread)."""
    method = channel.unary_unary(path)
    try:
        body, call = method.with_call(
            request, metadata=tuple(metadata), timeout=timeout, compression=compression
        )
    except grpc.RpcError as exc:
        return Reply(exc.code(), exc.details() or "", None)  # type: ignore[attr-defined]
    return Reply(call.code(), call.details() or "", body)


async def acall(channel: grpc.Channel, path: str, request: bytes, **kw: Any) -> Reply:
    return await trio.to_thread.run_sync(lambda: grpc_call(channel, path, request, **kw))


@asynccontextmanager
async def insecure_channel(port: int) -> AsyncIterator[grpc.Channel]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=NO_PROXY)
    try:
        yield channel
    finally:
        await trio.to_thread.run_sync(channel.close)


def self_signed(tmp: Any) -> tuple[ssl.SSLContext, bytes]:
    """A server SSLContext for 127.0.0.1/localhost and its certificate (PEM)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    (tmp / "cert.pem").write_bytes(cert_pem)
    (tmp / "key.pem").write_bytes(key_pem)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp / "cert.pem", tmp / "key.pem")
    return ctx, cert_pem


# --- a raw HTTP/2 client ---------------------------------------------------------


@dataclass
class RawResult:
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    data: bytes = b""
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reset: int | None = None
    goaway: int | None = None
    closed: bool = False

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers + self.trailers:
            if k == name:
                return v
        return None


class RawH2:
    """A minimal h2 client over a real socket, for requests grpcio never sends."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )

    @classmethod
    async def connect(cls, port: int) -> RawH2:
        client = cls(await trio.open_tcp_stream("127.0.0.1", port))
        client.conn.initiate_connection()
        await client.flush()
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    def request(
        self,
        path: bytes,
        body: bytes | None,
        *,
        method: bytes = b"POST",
        content_type: bytes = b"application/grpc",
        extra: Sequence[tuple[bytes, bytes]] = (),
        end: bool = True,
    ) -> int:
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", b"127.0.0.1"),
            (b"content-type", content_type),
            (b"te", b"trailers"),
            *extra,
        ]
        self.conn.send_headers(sid, headers, end_stream=body is None and end)
        if body is not None:
            self.conn.send_data(sid, body, end_stream=end)
        return sid

    async def wait(self, sid: int, *, limit: float = 10.0) -> RawResult:
        """Read until stream ``sid`` ends, is reset, or the connection goes."""
        result = RawResult()
        await self.flush()
        with trio.fail_after(limit):
            while True:
                data = await self.stream.receive_some(65536)
                if not data:
                    result.closed = True
                    return result
                for event in self.conn.receive_data(data):
                    if isinstance(event, h2.events.ResponseReceived) and event.stream_id == sid:
                        result.headers = list(event.headers or [])
                    elif isinstance(event, h2.events.DataReceived) and event.stream_id == sid:
                        result.data += event.data or b""
                        self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
                    elif isinstance(event, h2.events.TrailersReceived) and event.stream_id == sid:
                        result.trailers = list(event.headers or [])
                    elif isinstance(event, h2.events.StreamEnded) and event.stream_id == sid:
                        await self.flush()
                        return result
                    elif isinstance(event, h2.events.StreamReset) and event.stream_id == sid:
                        result.reset = int(event.error_code or 0)
                        return result
                    elif isinstance(event, h2.events.ConnectionTerminated):
                        result.goaway = int(event.error_code or 0)
                        return result
                await self.flush()

    async def aclose(self) -> None:
        await self.stream.aclose()
