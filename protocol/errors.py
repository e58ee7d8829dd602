"""The one exception hierarchy of tkms.

Every error says whose fault it was (``fault``): the peer that sent bad bytes, the
client that sent a bad request, our own misuse of an API, or the operator's
configuration. Messages name the field at fault and never carry secret values.
"""

from __future__ import annotations

import enum
from typing import ClassVar


class Fault(enum.Enum):
    """Who caused an error."""

    PEER = "peer"  # a remote party sent something invalid
    CLIENT = "client"  # an API client asked for something invalid
    LOCAL = "local"  # our own code or state (a bug, or a misuse of an API)
    CONFIG = "config"  # the operator's configuration or environment


class TkmsError(Exception):
    """Base of every error tkms raises on purpose."""

    fault: ClassVar[Fault] = Fault.LOCAL


class DecodeError(TkmsError, ValueError):
    """Bytes or text that do not decode to a valid value.

    ``field`` names what was being decoded (e.g. ``"sigma.X"``); ``reason`` says
    what is wrong with it, without echoing secret material.
    """

    fault: ClassVar[Fault] = Fault.PEER

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class InvalidLength(DecodeError):
    """A byte string of the wrong length."""


class InvalidPoint(DecodeError):
    """A coordinate >= p, a point off the curve, outside the subgroup, or infinity
    where infinity is meaningless."""


class InvalidScalar(DecodeError):
    """A scalar >= r, or zero where zero is meaningless."""


class VerificationError(TkmsError):
    """A signature, proof or MAC that does not verify."""

    fault: ClassVar[Fault] = Fault.PEER
