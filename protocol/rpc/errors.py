"""Typed errors and error codes of the RPC layer (``protocol.rpc``).

Errors raised while processing the peer's bytes carry ``Fault.PEER``: the shell
logs them and closes that one connection. Errors raised by our own calls (wrong
phase, invalid params we were about to send, too many requests in flight) carry
``Fault.LOCAL``. ``RpcError`` is what a method handler raises to answer with a
specific error code; ``ErrorCode`` lists the codes the transport itself uses.
"""

from __future__ import annotations

import enum
from typing import ClassVar

from protocol.errors import DecodeError, Fault, TkmsError, VerificationError


class ErrorCode(enum.IntEnum):
    """Codes of error responses produced by the transport; methods use >= 100."""

    UNKNOWN_METHOD = 1  # no handler for that method name
    INVALID_PARAMS = 2  # params fail the method's schema (the handler never ran)
    INTERNAL = 3  # the handler failed (details stay in the node's log)
    DEADLINE_EXCEEDED = 4  # the handler ran past the per-request deadline
    BUSY = 5  # the peer already had max_in_flight requests outstanding
    TOO_LARGE = 6  # the result does not fit in the peer's max_message_bytes
    BAD_REQUEST = 7  # the handler refused the request (a CLIENT/PEER-fault TkmsError)
    UNAVAILABLE = 8  # the server is shutting down


APPLICATION_CODES_START = 100  # codes a method may define for itself


class RpcError(TkmsError):
    """An error response: raised by a handler to answer with ``code``, and the value
    a client sees for an error response. ``message`` must not contain secrets."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, code: int, message: str) -> None:
        super().__init__(f"error {code}: {message}")
        self.code = code
        self.message = message


class ConnectionStateError(TkmsError):
    """A local call in the wrong phase or role (e.g. a request before the handshake
    finished, a response from the dialling side, a response to an unknown id)."""

    fault: ClassVar[Fault] = Fault.LOCAL


class FrameError(DecodeError):
    """Bytes that are not a valid hello or frame: bad magic, a frame above the
    limit, an empty frame, a bad chunk flag, a stream that ends mid-frame."""

    fault: ClassVar[Fault] = Fault.PEER


class MessageTooLarge(DecodeError):
    """A reassembled message above the receiver's ``max_message_bytes``."""

    fault: ClassVar[Fault] = Fault.PEER


class ProtocolViolation(DecodeError):
    """A well-formed message the peer must not send: a malformed envelope, a
    duplicate request id, a response to a request never made, a request sent to the
    dialling side, a non-empty first handshake payload."""

    fault: ClassVar[Fault] = Fault.PEER


class SchemaError(DecodeError):
    """A value that does not match its schema; ``field`` is the path to it."""

    fault: ClassVar[Fault] = Fault.PEER


class LocalSchemaError(SchemaError):
    """A value we were about to send (params or a result) fails its schema."""

    fault: ClassVar[Fault] = Fault.LOCAL


class OutgoingTooLarge(TkmsError):
    """A message we were about to send exceeds the peer's ``max_message_bytes``."""

    fault: ClassVar[Fault] = Fault.LOCAL


class TooManyInFlight(TkmsError):
    """A request would exceed the peer's advertised ``max_in_flight``; wait for a
    response first."""

    fault: ClassVar[Fault] = Fault.LOCAL


class VersionMismatch(TkmsError):
    """The peer's hello announces another protocol version: refused before the
    Noise handshake. ``ours`` and ``theirs`` are the two versions."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, ours: int, theirs: int) -> None:
        newer = "newer" if theirs > ours else "older"
        super().__init__(f"peer speaks protocol version {theirs} ({newer}), we speak {ours}")
        self.ours = ours
        self.theirs = theirs


class PeerNotAllowed(VerificationError):
    """The peer proved a static key that is not pinned for this connection."""

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, public_key: bytes) -> None:
        super().__init__(f"peer static key {public_key.hex()} is not allowed")
        self.public_key = public_key
