"""Events the sans-IO RPC connection produces (``Connection.next_event``), its
``NEED_DATA`` sentinel and its statistics record. Frozen value types, like h11's
``_events.py``."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from protocol.rpc.errors import ErrorCode
from protocol.rpc.messages import Limits
from protocol.rpc.schema import Method
from protocol.rpc.state import Phase


class NeedData(enum.Enum):
    NEED_DATA = "need data"


NEED_DATA = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class HandshakeComplete:
    """The session is open; the peer proved ``remote_static`` (already checked)."""

    remote_static: bytes
    handshake_hash: bytes
    peer_limits: Limits


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A request whose params passed ``method.params`` (responder only)."""

    request_id: int
    method: Method
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RequestRejected:
    """A request answered here with an error; the handler must not run."""

    request_id: int
    method: str
    code: ErrorCode
    reason: str


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A result that passed the method's result schema (initiator only)."""

    request_id: int
    result: Any


@dataclass(frozen=True, slots=True)
class ErrorReceived:
    request_id: int
    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ResultRejected:
    """A result that fails the method's result schema; the call has failed."""

    request_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed:
    """The peer ended the stream cleanly (at a message boundary) during ``phase``."""

    phase: Phase


Event = (
    HandshakeComplete
    | RequestReceived
    | RequestRejected
    | ResponseReceived
    | ErrorReceived
    | ResultRejected
    | ConnectionClosed
)


@dataclass(frozen=True, slots=True)
class ConnectionStatistics:
    phase: Phase
    buffered_bytes: int
    partial_message_bytes: int
    frames_received: int
    messages_received: int
    frames_sent: int
    messages_sent: int
    requests_in_flight: int  # initiator: awaiting a response; responder: being served
