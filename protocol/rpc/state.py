"""Phases and the one transition table of the RPC connection (``protocol.rpc.connection``).

Like h11's ``_state.py``: every change of phase is listed in ``TRANSITIONS``;
a local call whose (phase, action) is not in it raises ``ConnectionStateError`` and
changes nothing. Peer input never needs a lookup that can fail: the phase decides
how the next bytes are parsed (hello, handshake message or transport frame).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType


class Role(enum.Enum):
    INITIATOR = "initiator"  # dials and sends requests (the coordinator)
    RESPONDER = "responder"  # listens and answers (a node)


class Phase(enum.Enum):
    HELLO = "hello"  # waiting for the peer's hello
    HANDSHAKE = "handshake"  # Noise XX in progress
    OPEN = "open"  # transport: requests and responses
    CLOSED = "closed"  # the peer ended the stream


class Action(enum.Enum):
    RECEIVE_HELLO = "receive hello"
    RECEIVE_HANDSHAKE = "receive handshake message"
    FINISH_HANDSHAKE = "finish handshake"
    RECEIVE_MESSAGE = "receive message"
    RECEIVE_EOF = "receive end of stream"
    SEND_REQUEST = "send request"
    SEND_RESPONSE = "send response"


# The one transition table: (phase, action) -> next phase.
TRANSITIONS: Mapping[tuple[Phase, Action], Phase] = MappingProxyType(
    {
        (Phase.HELLO, Action.RECEIVE_HELLO): Phase.HANDSHAKE,
        (Phase.HELLO, Action.RECEIVE_EOF): Phase.CLOSED,
        (Phase.HANDSHAKE, Action.RECEIVE_HANDSHAKE): Phase.HANDSHAKE,
        (Phase.HANDSHAKE, Action.FINISH_HANDSHAKE): Phase.OPEN,
        (Phase.HANDSHAKE, Action.RECEIVE_EOF): Phase.CLOSED,
        (Phase.OPEN, Action.RECEIVE_MESSAGE): Phase.OPEN,
        (Phase.OPEN, Action.SEND_REQUEST): Phase.OPEN,
        (Phase.OPEN, Action.SEND_RESPONSE): Phase.OPEN,
        (Phase.OPEN, Action.RECEIVE_EOF): Phase.CLOSED,
    }
)
ROLE_ACTIONS: Mapping[Action, Role] = MappingProxyType(
    {Action.SEND_REQUEST: Role.INITIATOR, Action.SEND_RESPONSE: Role.RESPONDER}
)
