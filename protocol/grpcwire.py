"""gRPC over HTTP/2, the unary parts, sans-IO (PROTOCOL-HTTP2.md of grpc/grpc).

Request headers are checked and parsed (``parse_request_head``); a request body is
collected by :class:`UnaryBody`, which enforces the 5-byte message framing (1-byte
compressed flag, 4-byte big-endian length), the size cap as soon as the length prefix
arrives, identity encoding only, and exactly one message. Responses are a header
block, one framed message and trailers (``grpc-status``, percent-encoded
``grpc-message``), or a trailers-only header block for an error.

Status codes and the error texts follow grpc-go's server, so clients see what they
would see from cerberus. Nothing here does I/O: the trio + h2 shell is
``coordinator/grpc/server.py``.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from protocol.errors import Fault, TkmsError

CONTENT_TYPE = b"application/grpc"
HEADER_PREFIX_LEN = 5
MAX_TIMEOUT_SECONDS = 100_000_000 * 3600  # the largest grpc-timeout value; callers cap it


class StatusCode(enum.IntEnum):
    """gRPC status codes (grpc/grpc doc/statuscodes.md)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    @property
    def go_name(self) -> str:
        """The name grpc-go's ``codes.Code.String()`` gives (cerberus metric label)."""
        if self is StatusCode.OK:
            return "OK"
        if self is StatusCode.CANCELLED:
            return "Canceled"
        return "".join(part.capitalize() for part in self.name.split("_"))


class GrpcError(TkmsError):
    """A request that ends with a non-OK gRPC status. The message goes to the client."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, status: StatusCode, message: str) -> None:
        super().__init__(f"{status.name}: {message}")
        self.status = status
        self.message = message


class HttpError(TkmsError):
    """A request that is not gRPC at all; answered with a bare HTTP status."""

    fault: ClassVar[Fault] = Fault.CLIENT

    def __init__(self, http_status: int, message: str) -> None:
        super().__init__(f"HTTP {http_status}: {message}")
        self.http_status = http_status
        self.message = message


# --- requests --------------------------------------------------------------------

_TIMEOUT_RE = re.compile(rb"\A([0-9]{1,8})([HMSmun])\Z")
_TIMEOUT_UNIT = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_RESERVED = frozenset({"content-type", "te", "user-agent", "host"})


def parse_timeout(value: bytes) -> float:
    """``grpc-timeout`` (e.g. ``b"250m"``) in seconds."""
    m = _TIMEOUT_RE.match(value)
    if m is None:
        raise GrpcError(StatusCode.INTERNAL, f"malformed grpc-timeout: {value[:32]!r}")
    return int(m.group(1)) * _TIMEOUT_UNIT[m.group(2)]


@dataclass(frozen=True, slots=True)
class RequestHead:
    """The parts of a gRPC request header block the server uses."""

    path: str
    timeout: float | None  # seconds, from grpc-timeout
    encoding: str  # grpc-encoding, "identity" when absent
    metadata: dict[str, tuple[bytes, ...]]  # custom metadata, names lowercase

    def metadata_value(self, name: str) -> tuple[bytes, ...]:
        return self.metadata.get(name, ())


def parse_request_head(headers: Sequence[tuple[bytes, bytes]]) -> RequestHead:
    """Check a request header block (already HTTP/2-valid) and extract the gRPC parts.

    Raises :class:`HttpError` for a non-gRPC request (wrong method: 405, wrong content
    type: 415) and :class:`GrpcError` for a malformed gRPC header.
    """
    method = path = content_type = None
    timeout: float | None = None
    encoding = "identity"
    metadata: dict[str, list[bytes]] = {}
    for raw_name, value in headers:
        name = raw_name.decode("ascii", "replace").lower()
        if name == ":method":
            method = value
        elif name == ":path":
            path = value
        elif name == "content-type":
            content_type = value
        elif name == "grpc-timeout":
            timeout = parse_timeout(value)
        elif name == "grpc-encoding":
            encoding = value.decode("ascii", "replace")
        elif name.startswith((":", "grpc-")) or name in _RESERVED:
            continue
        else:
            metadata.setdefault(name, []).append(value)
    if method != b"POST":
        raise HttpError(405, "gRPC requires POST")
    if content_type is None or not (
        content_type == CONTENT_TYPE
        or content_type.startswith((CONTENT_TYPE + b"+", CONTENT_TYPE + b";"))
    ):
        raise HttpError(415, "invalid gRPC request content-type")
    if not path:
        raise GrpcError(StatusCode.UNIMPLEMENTED, "malformed method name: empty")
    try:
        path_text = path.decode("ascii")
    except UnicodeDecodeError:
        raise GrpcError(StatusCode.UNIMPLEMENTED, "malformed method name") from None
    return RequestHead(
        path=path_text,
        timeout=timeout,
        encoding=encoding,
        metadata={k: tuple(v) for k, v in metadata.items()},
    )


def unknown_method_error(path: str, known_services: Sequence[str]) -> GrpcError:
    """grpc-go's UNIMPLEMENTED texts for a path no handler serves."""
    service, _, method = path.lstrip("/").rpartition("/")
    if not path.startswith("/") or not service or not method:
        return GrpcError(StatusCode.UNIMPLEMENTED, f"malformed method name: {path[:200]!r}")
    if service not in known_services:
        return GrpcError(StatusCode.UNIMPLEMENTED, f"unknown service {service[:200]}")
    return GrpcError(
        StatusCode.UNIMPLEMENTED, f"unknown method {method[:200]} for service {service}"
    )


class UnaryBody:
    """Collects the request body of a unary call: exactly one framed message."""

    def __init__(self, *, max_message_size: int, encoding: str = "identity") -> None:
        self._max = max_message_size
        self._encoding = encoding
        self._buf = bytearray()
        self._length: int | None = None

    def feed(self, data: bytes) -> None:
        """Append received DATA bytes; raises GrpcError as soon as the body is bad."""
        self._buf += data
        if self._length is None and len(self._buf) >= HEADER_PREFIX_LEN:
            flag = self._buf[0]
            if flag > 1:
                raise GrpcError(StatusCode.INTERNAL, f"grpc: invalid compressed flag {flag}")
            if flag == 1:
                if self._encoding in ("", "identity"):
                    raise GrpcError(
                        StatusCode.INTERNAL,
                        "grpc: compressed flag set with identity or empty encoding",
                    )
                name = self._encoding[:64]
                raise GrpcError(
                    StatusCode.UNIMPLEMENTED,
                    f"grpc: Decompressor is not installed for grpc-encoding {name!r}",
                )
            self._length = int.from_bytes(self._buf[1:HEADER_PREFIX_LEN], "big")
            if self._length > self._max:
                raise GrpcError(
                    StatusCode.RESOURCE_EXHAUSTED,
                    f"grpc: received message larger than max ({self._length} vs. {self._max})",
                )
        if self._length is not None and len(self._buf) > HEADER_PREFIX_LEN + self._length:
            raise GrpcError(
                StatusCode.INTERNAL, "grpc: unary method received more than one message"
            )

    def finish(self) -> bytes:
        """The message once the client ended its stream."""
        if self._length is None:
            if self._buf:
                raise GrpcError(StatusCode.INTERNAL, "grpc: truncated message header")
            raise GrpcError(StatusCode.INTERNAL, "grpc: unary method received no request message")
        if len(self._buf) < HEADER_PREFIX_LEN + self._length:
            raise GrpcError(StatusCode.INTERNAL, "grpc: truncated message")
        return bytes(self._buf[HEADER_PREFIX_LEN:])


# --- responses -------------------------------------------------------------------


def frame_message(payload: bytes) -> bytes:
    """One uncompressed length-prefixed gRPC message."""
    return b"\x00" + len(payload).to_bytes(4, "big") + payload


def encode_grpc_message(text: str) -> bytes:
    """Percent-encode a status message (every byte outside 0x20-0x7E, and '%')."""
    out = bytearray()
    for b in text.encode("utf-8"):
        if 0x20 <= b <= 0x7E and b != 0x25:
            out.append(b)
        else:
            out += b"%%%02X" % b
    return bytes(out)


def decode_grpc_message(value: bytes) -> str:
    """Inverse of :func:`encode_grpc_message`; a malformed escape is kept as is."""
    out = bytearray()
    i = 0
    while i < len(value):
        if value[i] == 0x25 and _is_hex(value[i + 1 : i + 3]):
            out.append(int(value[i + 1 : i + 3], 16))
            i += 3
        else:
            out.append(value[i])
            i += 1
    return out.decode("utf-8", "replace")


def _is_hex(pair: bytes) -> bool:
    return len(pair) == 2 and all(c in b"0123456789abcdefABCDEF" for c in pair)


def response_headers() -> list[tuple[bytes, bytes]]:
    return [
        (b":status", b"200"),
        (b"content-type", CONTENT_TYPE),
        (b"grpc-accept-encoding", b"identity"),
    ]


def trailers(status: StatusCode, message: str = "") -> list[tuple[bytes, bytes]]:
    out = [(b"grpc-status", str(int(status)).encode())]
    if message:
        out.append((b"grpc-message", encode_grpc_message(message)))
    return out


def trailers_only(status: StatusCode, message: str) -> list[tuple[bytes, bytes]]:
    """A single header block that ends the call (the error path)."""
    return [(b":status", b"200"), (b"content-type", CONTENT_TYPE), *trailers(status, message)]


def http_error_headers(error: HttpError) -> list[tuple[bytes, bytes]]:
    return [(b":status", str(error.http_status).encode()), (b"content-type", b"text/plain")]
