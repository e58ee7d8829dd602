"""HandshakeState (Noise Protocol Framework rev. 34, sections 5.3, 7 and 9), driven
by pattern tables.

Supported names: ``Noise_<P>[<psk modifiers>]_25519_ChaChaPoly_<H>`` with ``P`` in
``PATTERNS`` (NK, KK, IK, XX), any ``pskN`` modifiers joined by ``+`` (section 9),
and ``H`` BLAKE2b or SHA256. The cluster itself only uses
``Noise_XX_25519_ChaChaPoly_BLAKE2b``; the rest is here so the public vectors
(cacophony, snow) check every code path.

Theory of operation. A pattern is a table of token tuples, one per message. Phases
alternate WRITE and READ (``TRANSITIONS``, the one table); after the last message
the phase is DONE and ``split()`` returns the transport state. Every method works
on a copy of the symmetric state and commits only when it has succeeded, so a bad
message (wrong length, bad tag, low-order key) raises a typed error and changes
nothing. Ephemeral keys come from the injected ``rng`` (tests pass the vectors'
fixed keys through it; production uses the OS generator).
"""

from __future__ import annotations

import copy
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

from protocol.noise.cipher import CipherState, SymmetricState
from protocol.noise.errors import (
    MalformedMessage,
    MessageTooLong,
    NoiseConfigError,
    NoiseStateError,
)
from protocol.noise.primitives import DHLEN, HASHES, MAX_MESSAGE_LEN, TAGLEN, KeyPair, dh
from protocol.rng import Rng, os_rng

PSKLEN = 32


@dataclass(frozen=True, slots=True)
class Pattern:
    """A handshake pattern: pre-messages (keys known in advance) and messages."""

    initiator_pre: tuple[str, ...]
    responder_pre: tuple[str, ...]
    messages: tuple[tuple[str, ...], ...]


PATTERNS: Mapping[str, Pattern] = MappingProxyType(
    {
        "NK": Pattern((), ("s",), (("e", "es"), ("e", "ee"))),
        "KK": Pattern(("s",), ("s",), (("e", "es", "ss"), ("e", "ee", "se"))),
        "IK": Pattern((), ("s",), (("e", "es", "s", "ss"), ("e", "ee", "se"))),
        "XX": Pattern((), (), (("e",), ("e", "ee", "s", "es"), ("s", "se"))),
    }
)

_NAME = re.compile(
    r"Noise_(?P<pattern>[A-Z]+)(?P<mods>psk\d(?:\+psk\d)*)?_25519_ChaChaPoly_(?P<hash>\w+)"
)


def parse_protocol_name(name: str) -> tuple[Pattern, str]:
    """The pattern (with its psk tokens placed) and hash name of a protocol name.

    Raises:
        NoiseConfigError: an unsupported pattern, modifier, DH, cipher or hash.
    """
    m = _NAME.fullmatch(name)
    if m is None or m["pattern"] not in PATTERNS or m["hash"] not in HASHES:
        raise NoiseConfigError(f"unsupported Noise protocol {name!r}")
    base = PATTERNS[m["pattern"]]
    messages = [list(tokens) for tokens in base.messages]
    for mod in m["mods"].split("+") if m["mods"] else ():
        n = int(mod[3:])
        if n > len(messages):
            raise NoiseConfigError(f"{mod} is beyond the last message of {m['pattern']}")
        if n == 0:
            messages[0].insert(0, "psk")
        else:
            messages[n - 1].append("psk")
    pattern = Pattern(base.initiator_pre, base.responder_pre, tuple(map(tuple, messages)))
    return pattern, m["hash"]


class Phase(enum.Enum):
    """Whose turn it is."""

    WRITE = "write"
    READ = "read"
    DONE = "done"


class Op(enum.Enum):
    WRITE = "write_message"
    READ = "read_message"


# The one transition table: (phase, operation) -> phase after it, unless it was the
# last message, in which case the phase becomes DONE.
TRANSITIONS: Mapping[tuple[Phase, Op], Phase] = MappingProxyType(
    {(Phase.WRITE, Op.WRITE): Phase.READ, (Phase.READ, Op.READ): Phase.WRITE}
)


@dataclass(frozen=True, slots=True)
class TransportState:
    """What a finished handshake yields: one CipherState per direction."""

    send: CipherState
    receive: CipherState
    handshake_hash: bytes
    remote_static: bytes | None


class HandshakeState:
    """One side of one Noise handshake (section 5.3)."""

    def __init__(
        self,
        protocol_name: str,
        *,
        initiator: bool,
        prologue: bytes = b"",
        s: KeyPair | None = None,
        rs: bytes | None = None,
        psks: Sequence[bytes] = (),
        rng: Rng = os_rng,
    ) -> None:
        """Initialize (section 5.3) for ``protocol_name``.

        Args:
            initiator: the side that writes the first message.
            prologue: bytes both sides must agree on (bound into ``h``).
            s: our static key pair, if the pattern uses one.
            rs: the peer's static public key, if the pattern has it as a pre-message.
            psks: the pre-shared keys (32 bytes each), in the order they are used.
            rng: the source of ephemeral private keys.

        Raises:
            NoiseConfigError: unsupported name, a missing or superfluous key, or PSKs
                of the wrong number or size.
        """
        pattern, hash_name = parse_protocol_name(protocol_name)
        self.initiator = initiator
        self._pattern = pattern
        self._rng = rng
        self._s = s
        self._e: KeyPair | None = None
        self._rs = rs
        self._re: bytes | None = None
        self._psks = tuple(psks)
        self._psk_mode = any("psk" in msg for msg in pattern.messages)
        self._psk_used = 0
        self._index = 0
        self._phase = Phase.WRITE if initiator else Phase.READ
        ours_pre = pattern.initiator_pre if initiator else pattern.responder_pre
        theirs_pre = pattern.responder_pre if initiator else pattern.initiator_pre
        writes_s = any(
            "s" in msg for i, msg in enumerate(pattern.messages) if (i % 2 == 0) == initiator
        )
        if (writes_s or "s" in ours_pre) and s is None:
            raise NoiseConfigError(f"{protocol_name} needs our static key")
        if "s" in theirs_pre and (rs is None or len(rs) != DHLEN):
            raise NoiseConfigError(f"{protocol_name} needs the peer's 32-byte static key")
        n_psk = sum(msg.count("psk") for msg in pattern.messages)
        if len(self._psks) != n_psk or any(len(p) != PSKLEN for p in self._psks):
            raise NoiseConfigError(f"{protocol_name} needs {n_psk} PSKs of {PSKLEN} bytes")
        self._sym = SymmetricState.initialize(protocol_name.encode(), HASHES[hash_name])
        self._sym.mix_hash(prologue)
        for token in pattern.initiator_pre:
            self._mix_pre(token, ours=initiator)
        for token in pattern.responder_pre:
            self._mix_pre(token, ours=not initiator)

    def _mix_pre(self, token: str, *, ours: bool) -> None:
        if token != "s":  # pragma: no cover - no supported pattern pre-sends "e"
            raise NoiseConfigError(f"pre-message token {token!r} is not supported")
        key = self._s.public if ours and self._s is not None else self._rs
        if key is None:  # pragma: no cover - __init__ checked that the key exists
            raise NoiseConfigError("a pre-message key is missing")
        self._sym.mix_hash(key)

    # -- observation ------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def remote_static(self) -> bytes | None:
        """The peer's static public key, once known (pre-message or ``s`` token)."""
        return self._rs

    @property
    def handshake_hash(self) -> bytes:
        return self._sym.h

    # -- the two operations -------------------------------------------------------

    def _advance(self, op: Op) -> Phase:
        try:
            nxt = TRANSITIONS[(self._phase, op)]
        except KeyError:
            raise NoiseStateError(
                f"{op.value} is not allowed in phase {self._phase.value}"
            ) from None
        return Phase.DONE if self._index + 1 == len(self._pattern.messages) else nxt

    def _dh_token(self, token: str, e: KeyPair | None, re: bytes | None, rs: bytes | None) -> bytes:
        # The first letter is the initiator's key, the second the responder's.
        ours, theirs = (token[0], token[1]) if self.initiator else (token[1], token[0])
        local = e if ours == "e" else self._s
        remote = re if theirs == "e" else rs
        if local is None or remote is None:
            raise NoiseStateError(f"token {token!r} needs a key this side does not have")
        return dh(local, remote)

    def write_message(self, payload: bytes = b"") -> bytes:
        """WriteMessage: the next handshake message carrying ``payload``.

        Raises:
            NoiseStateError: it is the peer's turn, or the handshake is done.
            MessageTooLong: the message would exceed 65,535 bytes.
        """
        phase = self._advance(Op.WRITE)
        sym = self._sym.copy()
        e, psk_used, out = self._e, self._psk_used, bytearray()
        for token in self._pattern.messages[self._index]:
            if token == "e":
                e = KeyPair.generate(self._rng)
                out += e.public
                sym.mix_hash(e.public)
                if self._psk_mode:
                    sym.mix_key(e.public)
            elif token == "s":
                if self._s is None:  # pragma: no cover - __init__ checked it
                    raise NoiseStateError("pattern writes s but no static key was given")
                out += sym.encrypt_and_hash(self._s.public)
            elif token == "psk":
                sym.mix_key_and_hash(self._psks[psk_used])
                psk_used += 1
            else:
                sym.mix_key(self._dh_token(token, e, self._re, self._rs))
        if len(out) + len(payload) + (TAGLEN if sym.cipher.has_key() else 0) > MAX_MESSAGE_LEN:
            raise MessageTooLong(f"handshake message would exceed {MAX_MESSAGE_LEN} bytes")
        out += sym.encrypt_and_hash(payload)
        self._sym, self._e, self._psk_used = sym, e, psk_used
        self._index += 1
        self._phase = phase
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """ReadMessage: process the peer's next handshake message, return its payload.

        Raises:
            NoiseStateError: it is our turn, or the handshake is done.
            MalformedMessage: too short, or above 65,535 bytes.
            InvalidPublicKey: a low-order DH key.
            DecryptError: a tag fails (tampering, wrong prologue, wrong keys or PSK).
        """
        phase = self._advance(Op.READ)
        if len(message) > MAX_MESSAGE_LEN:
            raise MalformedMessage("noise.handshake", f"above {MAX_MESSAGE_LEN} bytes")
        sym = self._sym.copy()
        re, rs, psk_used, pos = self._re, self._rs, self._psk_used, 0
        view = bytes(message)
        for token in self._pattern.messages[self._index]:
            if token == "e":
                if len(view) - pos < DHLEN:
                    raise MalformedMessage("noise.handshake", "too short for an ephemeral key")
                re = view[pos : pos + DHLEN]
                pos += DHLEN
                sym.mix_hash(re)
                if self._psk_mode:
                    sym.mix_key(re)
            elif token == "s":
                size = DHLEN + (TAGLEN if sym.cipher.has_key() else 0)
                if len(view) - pos < size:
                    raise MalformedMessage("noise.handshake", "too short for a static key")
                rs = sym.decrypt_and_hash(view[pos : pos + size])
                pos += size
            elif token == "psk":
                sym.mix_key_and_hash(self._psks[psk_used])
                psk_used += 1
            else:
                sym.mix_key(self._dh_token(token, self._e, re, rs))
        if sym.cipher.has_key() and len(view) - pos < TAGLEN:
            raise MalformedMessage("noise.handshake", "too short for the payload tag")
        payload = sym.decrypt_and_hash(view[pos:])
        self._sym, self._re, self._rs, self._psk_used = sym, re, rs, psk_used
        self._index += 1
        self._phase = phase
        return payload

    def split(self) -> TransportState:
        """The transport CipherStates, oriented for this side.

        Raises:
            NoiseStateError: the handshake is not finished.
        """
        if self._phase is not Phase.DONE:
            raise NoiseStateError(f"split is not allowed in phase {self._phase.value}")
        c1, c2 = self._sym.split()
        send, receive = (c1, c2) if self.initiator else (c2, c1)
        return TransportState(send, receive, self._sym.h, self._rs)

    def copy(self) -> HandshakeState:
        """An independent copy (every other attribute is immutable), so a caller can
        try a read followed by a write and keep the original if either fails."""
        other = copy.copy(self)
        other._sym = self._sym.copy()
        return other

    def __repr__(self) -> str:
        role = "initiator" if self.initiator else "responder"
        return f"HandshakeState({role}, phase={self._phase.value}, message={self._index})"
