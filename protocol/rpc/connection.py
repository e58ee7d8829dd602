"""The sans-IO RPC connection, one per side of a TCP connection (modelled on h11).

The caller owns the socket: it passes received bytes to ``receive_data`` (``b""``
for end of stream), pulls ``Event``s from ``next_event()`` until ``NEED_DATA``, and
writes whatever ``data_to_send()`` returns. ``send_request`` / ``send_response`` /
``send_error`` only queue bytes. Nothing here reads a clock, sleeps or logs:
timeouts, deadlines and logging belong to the shells (node/transport.py,
coordinator/sessions.py).

Theory of operation (DESIGN.md §Transport; wire format in ``protocol.rpc.messages``):

    HELLO ──hello──▶ HANDSHAKE ──Noise XX, 3 messages──▶ OPEN ──EOF──▶ CLOSED

The INITIATOR (the coordinator) dials and sends requests; the RESPONDER (a node)
answers them. Both send their hello at once; the initiator also sends Noise message
1 without waiting. A different version in the peer's hello is refused
(``VersionMismatch``) before any handshake. The prologue binds b"tkms", the version
and the cluster id, so a peer of another cluster fails the handshake. The peer's
static key is checked against ``allowed_peers`` as soon as it is learned (message 2
for the initiator, before it sends message 3; message 3 for the responder, before
any request is read): ``PeerNotAllowed``.

Rules:
1. Every transition is in ``TRANSITIONS``; local calls in the wrong phase or role
   raise ``ConnectionStateError``.
2. Processing the peer's bytes is transactional: if ``next_event`` raises, nothing
   changed since the call began (buffer, phase, nonces, reassembly, requests in
   flight, queued output), and calling it again raises the same error. Errors from
   peer bytes carry ``Fault.PEER``; the shell logs the reason and closes the
   connection.
3. Requests are schema-checked before a ``RequestReceived`` is produced: an unknown
   method, invalid params or one request above ``max_in_flight`` is answered here
   with an error response (``RequestRejected`` tells the shell why); the handler
   never sees it. Results are checked on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Any, Literal

from protocol.canonical import encode_canonical
from protocol.noise import (
    CLUSTER_PROTOCOL,
    MAX_NONCE,
    TAGLEN,
    CipherState,
    HandshakeState,
    KeyPair,
    NonceExhausted,
    cluster_prologue,
)
from protocol.noise import Phase as NoisePhase
from protocol.rng import Rng, os_rng
from protocol.rpc.errors import (
    ConnectionStateError,
    ErrorCode,
    FrameError,
    LocalSchemaError,
    MessageTooLarge,
    OutgoingTooLarge,
    PeerNotAllowed,
    ProtocolViolation,
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
    NeedData,
    RequestReceived,
    RequestRejected,
    ResponseReceived,
    ResultRejected,
)
from protocol.rpc.messages import (
    FLAG_LAST,
    FLAG_MORE,
    FRAME_HEADER_LEN,
    HELLO_LEN,
    PROTOCOL_VERSION,
    Limits,
    decode_hello,
    decode_request,
    decode_response,
    encode_error,
    encode_hello,
    encode_request,
    encode_result,
    frame,
)
from protocol.rpc.schema import PING, Method, Schema
from protocol.rpc.state import ROLE_ACTIONS, TRANSITIONS, Action, Phase, Role

_FLAG_BYTES = (bytes([FLAG_LAST]), bytes([FLAG_MORE]))


class Connection:
    """One side of one RPC connection. See the module docstring."""

    def __init__(
        self,
        role: Role,
        *,
        static: KeyPair,
        cluster_id: bytes,
        allowed_peers: Collection[bytes],
        methods: Iterable[Method] = (),
        limits: Limits | None = None,
        version: int = PROTOCOL_VERSION,
        rng: Rng = os_rng,
    ) -> None:
        """Args:
        role: INITIATOR (dials, sends requests) or RESPONDER (answers them).
        static: our Noise static key pair.
        cluster_id: the 16-byte cluster id bound into the prologue.
        allowed_peers: the static public keys we accept from the peer (the node we
            dialled, or the manifest's coordinators).
        methods: what a responder serves (``PING`` is always served).
        limits: what we accept from the peer; advertised in the handshake.
        version: our protocol version (other values only to test refusals).
        rng: the source of the ephemeral key.
        """
        self.role = role
        self._phase = Phase.HELLO
        self._version = version
        self._limits = limits if limits is not None else Limits()
        self._allowed = frozenset(bytes(k) for k in allowed_peers)
        self._methods = {m.name: m for m in (PING, *methods)}
        self._hs = HandshakeState(
            CLUSTER_PROTOCOL,
            initiator=role is Role.INITIATOR,
            prologue=cluster_prologue(version, cluster_id),
            s=static,
            rng=rng,
        )
        self._send: CipherState | None = None
        self._recv: CipherState | None = None
        self._peer_limits: Limits | None = None
        self.remote_static: bytes | None = None
        self._in = bytearray()
        self._pos = 0
        self._eof = False
        self._out: list[bytes] = [encode_hello(version)]  # joined by data_to_send
        self._partial: list[bytes] = []
        self._partial_len = 0
        self._next_id = 0
        self._pending: dict[int, Method] = {}
        self._abandoned: set[int] = set()
        self._serving: dict[int, Method] = {}
        self._frames_received = self._messages_received = 0
        self._frames_sent = self._messages_sent = 0
        if role is Role.INITIATOR:
            self._out.append(frame(self._hs.write_message()))

    # -- observation ------------------------------------------------------------------

    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def peer_limits(self) -> Limits | None:
        return self._peer_limits

    @property
    def requests_in_flight(self) -> int:
        """Initiator: requests not yet answered (abandoned ones included, since the peer
        still counts them); responder: requests being served."""
        return len(self._pending) + len(self._abandoned) + len(self._serving)

    def statistics(self) -> ConnectionStatistics:
        in_flight = self.requests_in_flight
        return ConnectionStatistics(
            phase=self._phase,
            buffered_bytes=len(self._in) - self._pos,
            partial_message_bytes=self._partial_len,
            frames_received=self._frames_received,
            messages_received=self._messages_received,
            frames_sent=self._frames_sent,
            messages_sent=self._messages_sent,
            requests_in_flight=in_flight,
        )

    # -- bytes in ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the peer; ``b""`` means the peer ended the stream.

        Raises:
            ConnectionStateError: data after the end of stream.
        """
        if self._eof:
            if data:
                raise ConnectionStateError("data received after the end of stream")
            return
        if not data:
            self._eof = True
            return
        if self._pos:  # drop what was consumed; at most one partial frame remains
            del self._in[: self._pos]
            self._pos = 0
        self._in += data

    def next_event(self) -> Event | Literal[NeedData.NEED_DATA]:
        """The next event from buffered bytes, or ``NEED_DATA``.

        Raises (nothing changed; the shell should close the connection):
            VersionMismatch, FrameError, PeerNotAllowed, ProtocolViolation,
            MessageTooLarge, and the Noise errors (DecryptError, InvalidPublicKey,
            MalformedMessage), all with ``Fault.PEER``; NonceExhausted (LOCAL).
        """
        saved = self._save()
        try:
            return self._next_event()
        except BaseException:
            self._restore(saved)  # units accepted earlier in this call are undone too
            raise

    def _save(self) -> tuple[Any, ...]:
        return (
            self._pos,
            self._phase,
            self._hs,
            self._recv,
            list(self._partial),
            self._partial_len,
            self._frames_received,
            self._frames_sent,
            self._messages_received,
            len(self._out),
            set(self._abandoned) if self._abandoned else None,
        )

    def _restore(self, saved: tuple[Any, ...]) -> None:
        (
            self._pos,
            self._phase,
            self._hs,
            self._recv,
            self._partial,
            self._partial_len,
            self._frames_received,
            self._frames_sent,
            self._messages_received,
            out_len,
            abandoned,
        ) = saved
        del self._out[out_len:]
        self._abandoned = abandoned or set()

    def _next_event(self) -> Event | Literal[NeedData.NEED_DATA]:
        while True:
            if self._phase is Phase.CLOSED:
                return ConnectionClosed(Phase.CLOSED)
            if self._phase is Phase.HELLO:
                if len(self._in) - self._pos < HELLO_LEN:
                    return self._need_data()
                theirs = decode_hello(bytes(self._in[self._pos : self._pos + HELLO_LEN]))
                if theirs != self._version:
                    raise VersionMismatch(self._version, theirs)
                self._pos += HELLO_LEN
                self._phase = TRANSITIONS[(self._phase, Action.RECEIVE_HELLO)]
                continue
            body = self._peek_frame()
            if body is None:
                return self._need_data()
            if self._phase is Phase.HANDSHAKE:
                event: Event | None = self._on_handshake(body)
            else:
                event = self._on_transport(body)
            self._pos += FRAME_HEADER_LEN + len(body)
            self._frames_received += 1
            if event is not None:
                return event

    def _need_data(self) -> Event | Literal[NeedData.NEED_DATA]:
        if not self._eof:
            return NEED_DATA
        if len(self._in) - self._pos or self._partial_len:
            raise FrameError(
                "stream", f"ends in the middle of a frame or message ({self._phase.value})"
            )
        closed_in = self._phase
        self._phase = TRANSITIONS[(self._phase, Action.RECEIVE_EOF)]
        return ConnectionClosed(closed_in)

    def _peek_frame(self) -> bytes | None:
        available = len(self._in) - self._pos
        if available < FRAME_HEADER_LEN:
            return None
        size = int.from_bytes(self._in[self._pos : self._pos + FRAME_HEADER_LEN], "big")
        if size == 0:
            raise FrameError("frame", "empty frame")
        if size > self._limits.max_frame_bytes:
            raise FrameError(
                "frame", f"{size} bytes exceeds the limit of {self._limits.max_frame_bytes}"
            )
        if available < FRAME_HEADER_LEN + size:
            return None
        start = self._pos + FRAME_HEADER_LEN
        with memoryview(self._in) as view:  # one copy, and the buffer stays resizable
            return bytes(view[start : start + size])

    def _check_peer(self, hs: HandshakeState) -> bytes:
        rs = hs.remote_static
        if rs is None or rs not in self._allowed:
            raise PeerNotAllowed(rs or b"")
        return rs

    def _on_handshake(self, body: bytes) -> Event | None:
        hs = self._hs.copy()  # commit only if everything below succeeds
        payload = hs.read_message(body)
        if self.role is Role.RESPONDER and hs.phase is NoisePhase.WRITE:
            # Message 1 read: it carries nothing; answer with message 2.
            if payload:
                raise ProtocolViolation("handshake.payload", "message 1 must be empty")
            reply = frame(hs.write_message(encode_canonical(self._limits.to_dict())))
            self._hs = hs
            self._out.append(reply)
            self._frames_sent += 1
            self._phase = TRANSITIONS[(self._phase, Action.RECEIVE_HANDSHAKE)]
            return None
        rs = self._check_peer(hs)
        peer_limits = Limits.decode(payload)
        reply = b""
        if self.role is Role.INITIATOR:
            reply = frame(hs.write_message(encode_canonical(self._limits.to_dict())))
        transport = hs.split()
        # Commit.
        self._hs = hs
        self._out.append(reply)
        self._frames_sent += 1 if reply else 0
        self._send, self._recv = transport.send, transport.receive
        self._peer_limits, self.remote_static = peer_limits, rs
        self._phase = TRANSITIONS[(self._phase, Action.FINISH_HANDSHAKE)]
        return HandshakeComplete(rs, transport.handshake_hash, peer_limits)

    def _on_transport(self, body: bytes) -> Event | None:
        if self._recv is None:  # pragma: no cover - OPEN implies keys
            raise ConnectionStateError("no transport keys")
        cs = self._recv.copy()
        plaintext = cs.decrypt_with_ad(b"", body)
        if not plaintext or plaintext[0] not in (FLAG_LAST, FLAG_MORE):
            raise FrameError("frame", "missing or unknown chunk flag")
        chunk = plaintext[1:]
        total = self._partial_len + len(chunk)
        if total > self._limits.max_message_bytes:
            raise MessageTooLarge(
                "message", f"exceeds the limit of {self._limits.max_message_bytes} bytes"
            )
        if plaintext[0] == FLAG_MORE:
            self._recv = cs
            self._partial.append(chunk)
            self._partial_len = total
            return None
        data = b"".join((*self._partial, chunk)) if self._partial else chunk
        on_message = self._on_request if self.role is Role.RESPONDER else self._on_response
        event = on_message(data)
        # Commit (nothing below can fail).
        self._recv = cs
        self._partial, self._partial_len = [], 0
        self._messages_received += 1
        return event

    def _on_request(self, data: bytes) -> Event | None:
        req = decode_request(data, max_len=self._limits.max_message_bytes)
        if req.request_id in self._serving:
            raise ProtocolViolation("request.id", "duplicate id of a request in flight")
        method = self._methods.get(req.method)
        if method is None:
            return self._reject(
                req.request_id, req.method, ErrorCode.UNKNOWN_METHOD, "unknown method"
            )
        if len(self._serving) >= self._limits.max_in_flight:
            reason = f"more than {self._limits.max_in_flight} requests in flight"
            return self._reject(req.request_id, req.method, ErrorCode.BUSY, reason)
        try:
            method.params.check(req.params, "params")
        except SchemaError as exc:
            return self._reject(req.request_id, req.method, ErrorCode.INVALID_PARAMS, str(exc))
        self._serving[req.request_id] = method
        return RequestReceived(req.request_id, method, req.params)

    def _reject(self, request_id: int, method: str, code: ErrorCode, reason: str) -> Event:
        self._queue_message(encode_error(request_id, code, reason))
        return RequestRejected(request_id, method, code, reason)

    def _on_response(self, data: bytes) -> Event | None:
        resp = decode_response(data, max_len=self._limits.max_message_bytes)
        rid = resp.request_id
        if rid in self._abandoned:
            self._abandoned.discard(rid)  # the caller gave up on it; drop the answer
            return None
        method = self._pending.get(rid)
        if method is None:
            raise ProtocolViolation("response.id", "no request with this id is in flight")
        del self._pending[rid]
        if resp.error is not None:
            return ErrorReceived(rid, resp.error[0], resp.error[1])
        try:
            method.result.check(resp.result, "result")
        except SchemaError as exc:
            return ResultRejected(rid, str(exc))
        return ResponseReceived(rid, resp.result)

    # -- bytes out --------------------------------------------------------------------

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call (may be empty)."""
        data = b"".join(self._out)
        self._out.clear()
        return data

    def _require(self, action: Action) -> None:
        if (self._phase, action) not in TRANSITIONS:
            raise ConnectionStateError(f"cannot {action.value} in phase {self._phase.value}")
        if ROLE_ACTIONS.get(action, self.role) is not self.role:
            raise ConnectionStateError(f"the {self.role.value} cannot {action.value}")

    def _queue_message(self, body: bytes) -> None:
        if self._send is None or self._peer_limits is None:  # pragma: no cover
            raise ConnectionStateError("no transport keys")
        if len(body) > self._peer_limits.max_message_bytes:
            raise OutgoingTooLarge(
                f"message of {len(body)} bytes exceeds the peer's limit of "
                f"{self._peer_limits.max_message_bytes}"
            )
        step = self._peer_limits.max_frame_bytes - TAGLEN - 1
        count = max(1, -(-len(body) // step))
        if self._send.n + count >= MAX_NONCE:
            raise NonceExhausted("nonce would reach 2^64-1; the session must end")
        view = memoryview(body)
        for i in range(count):
            flag = _FLAG_BYTES[FLAG_MORE if i + 1 < count else FLAG_LAST]
            ciphertext = self._send.encrypt_with_ad(b"", flag + view[i * step : (i + 1) * step])
            self._out.append(len(ciphertext).to_bytes(2, "big"))
            self._out.append(ciphertext)
        self._frames_sent += count
        self._messages_sent += 1

    def send_request(self, method: Method, params: dict[str, Any]) -> int:
        """Queue a request; returns its id.

        Raises:
            ConnectionStateError: not OPEN, or not the initiator.
            LocalSchemaError: ``params`` fail ``method.params``.
            TooManyInFlight: the peer's ``max_in_flight`` is reached.
            OutgoingTooLarge: the request exceeds the peer's ``max_message_bytes``.
        """
        self._require(Action.SEND_REQUEST)
        if self._peer_limits is None:  # pragma: no cover - OPEN implies limits
            raise ConnectionStateError("no peer limits")
        body = _encode_checked(
            method.params,
            params,
            "params",
            lambda: encode_request(self._next_id, method.name, params),
        )
        if len(self._pending) + len(self._abandoned) >= self._peer_limits.max_in_flight:
            raise TooManyInFlight(
                f"the peer accepts {self._peer_limits.max_in_flight} requests in flight"
            )
        self._queue_message(body)
        request_id = self._next_id
        self._next_id += 1
        self._pending[request_id] = method
        return request_id

    def abandon(self, request_id: int) -> None:
        """Forget a request (its caller timed out); its late response is dropped. It
        still counts as in flight until that response arrives."""
        if self._pending.pop(request_id, None) is not None:
            self._abandoned.add(request_id)

    def send_response(self, request_id: int, result: Any) -> None:
        """Queue the result of a request this side received.

        Raises:
            ConnectionStateError: not OPEN, not the responder, or no such request.
            LocalSchemaError: ``result`` fails the method's result schema.
            OutgoingTooLarge: the response exceeds the peer's ``max_message_bytes``.
        """
        self._require(Action.SEND_RESPONSE)
        method = self._serving.get(request_id)
        if method is None:
            raise ConnectionStateError(f"no request {request_id} is being served")
        body = _encode_checked(
            method.result, result, "result", lambda: encode_result(request_id, result)
        )
        self._queue_message(body)
        del self._serving[request_id]

    def send_error(self, request_id: int, code: int, message: str) -> None:
        """Queue an error response to a request this side received.

        Raises:
            ConnectionStateError: not OPEN, not the responder, or no such request.
        """
        self._require(Action.SEND_RESPONSE)
        if request_id not in self._serving:
            raise ConnectionStateError(f"no request {request_id} is being served")
        self._queue_message(encode_error(request_id, code, message))
        del self._serving[request_id]

    def __repr__(self) -> str:
        return f"Connection({self.role.value}, phase={self._phase.value})"


def _encode_checked(schema: Schema, value: Any, path: str, encode: Callable[[], bytes]) -> bytes:
    try:
        schema.check(value, path)
        body: bytes = encode()
    except SchemaError as exc:
        raise LocalSchemaError(exc.field, exc.reason) from None
    except (TypeError, ValueError, OverflowError) as exc:  # a value msgpack cannot encode
        raise LocalSchemaError(path, str(exc)) from None
    return body
