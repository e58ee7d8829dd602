"""Framing and RPC over Noise, sans-IO (DESIGN.md §Transport).

* ``schema``: ``Method`` and the schema nodes (``Struct``, ``Int``, ``Bytes``, ...);
* ``messages``: the wire format (hello, frames, chunks, envelopes) and ``Limits``;
* ``connection``: the h11-style ``Connection`` (feed bytes, get events, send bytes);
* ``errors``: typed errors and ``ErrorCode``.

The trio shells are ``node.transport`` (listener) and ``coordinator.sessions``
(dialer); they only move bytes, keep time and log.
"""

from __future__ import annotations

from protocol.rpc.connection import Connection
from protocol.rpc.errors import (
    APPLICATION_CODES_START,
    ConnectionStateError,
    ErrorCode,
    FrameError,
    LocalSchemaError,
    MessageTooLarge,
    OutgoingTooLarge,
    PeerNotAllowed,
    ProtocolViolation,
    RpcError,
    SchemaError,
    TooManyInFlight,
    VersionMismatch,
)
from protocol.rpc.events import (
    NEED_DATA,
    ConnectionClosed,
    ConnectionStatistics,
    ErrorReceived,
    Event,
    HandshakeComplete,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    ResultRejected,
)
from protocol.rpc.messages import MAX_FRAME_LEN, PROTOCOL_VERSION, Limits
from protocol.rpc.schema import (
    PING,
    Bool,
    Bytes,
    Choice,
    Int,
    ListOf,
    MapOf,
    Method,
    Nil,
    Nullable,
    Schema,
    Str,
    Struct,
)
from protocol.rpc.state import Phase, Role

__all__ = [
    "APPLICATION_CODES_START",
    "MAX_FRAME_LEN",
    "NEED_DATA",
    "PING",
    "PROTOCOL_VERSION",
    "Bool",
    "Bytes",
    "Choice",
    "Connection",
    "ConnectionClosed",
    "ConnectionStateError",
    "ConnectionStatistics",
    "ErrorCode",
    "ErrorReceived",
    "Event",
    "FrameError",
    "HandshakeComplete",
    "Int",
    "Limits",
    "ListOf",
    "LocalSchemaError",
    "MapOf",
    "MessageTooLarge",
    "Method",
    "Nil",
    "Nullable",
    "OutgoingTooLarge",
    "PeerNotAllowed",
    "Phase",
    "ProtocolViolation",
    "RequestReceived",
    "RequestRejected",
    "ResponseReceived",
    "ResultRejected",
    "Role",
    "RpcError",
    "Schema",
    "SchemaError",
    "Str",
    "Struct",
    "TooManyInFlight",
    "VersionMismatch",
]
