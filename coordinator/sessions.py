"""The coordinator's sessions to its nodes: dial every node, keep the sessions up,
and make RPC calls on them (trio shell over ``protocol.rpc.Connection``).

``open_session_manager(nodes, ...)`` starts one task per node in its own nursery.
Each task dials the node's address, runs the Noise XX handshake and accepts only the
static key pinned for THAT node (any other key: ``PeerNotAllowed``, logged, retried
later). A session is "up" from the end of the handshake until its stream breaks, the
peer closes it or a keepalive ping gets no answer; then pending calls fail with
``NodeUnavailable`` and the task redials after an exponential backoff with jitter
(reset once a session comes up). See DESIGN.md §Transport.

``call(node, method, params, *, timeout)`` returns the result (schema-checked) or
raises ``NodeUnavailable`` (no session right now, or it died during the call),
``Timeout`` (no answer in time; the late answer is dropped), ``RemoteError`` (an
error response, with its code) or ``InvalidResult`` (the node's result fails the
method's schema). A call to a node that is down fails at once: the signing path
never waits for dead nodes. Calls above the node's advertised ``max_in_flight`` wait
for a free slot (within their timeout).
"""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import trio

from protocol.errors import DecodeError, Fault, TkmsError
from protocol.manifest import NodeEntry
from protocol.noise import KeyPair
from protocol.rpc import (
    NEED_DATA,
    PING,
    Connection,
    ConnectionClosed,
    ErrorReceived,
    Limits,
    Method,
    Phase,
    ResponseReceived,
    ResultRejected,
    Role,
    RpcError,
)
from shell.rpc_stream import RECEIVE_BYTES, ConnectionWriter

log = logging.getLogger("tkms.sessions")


class SessionError(TkmsError):
    """Base of the session manager's errors."""

    fault: ClassVar[Fault] = Fault.PEER


class UnknownNode(SessionError):
    """A call or wait names a node that is not in the manager's list."""

    fault: ClassVar[Fault] = Fault.LOCAL


class NodeUnavailable(SessionError):
    """The node has no session (or lost it during the call)."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"node {node} is unavailable: {reason}")
        self.node = node
        self.reason = reason


class Timeout(SessionError):
    """No answer within the call's timeout."""

    def __init__(self, node: str, method: str, timeout_s: float) -> None:
        super().__init__(f"{node}: {method} got no answer within {timeout_s} s")
        self.node = node
        self.method = method
        self.timeout_s = timeout_s


class RemoteError(RpcError):
    """The node answered with an error response (``code``, ``message``)."""

    def __init__(self, node: str, code: int, message: str) -> None:
        super().__init__(code, message)
        self.node = node


class InvalidResult(DecodeError):
    """The node's result does not match the method's result schema."""

    fault: ClassVar[Fault] = Fault.PEER


@dataclass(frozen=True, slots=True)
class NodeEndpoint:
    """Where a node listens and the Noise static key it must prove."""

    name: str
    host: str
    port: int
    noise_public_key: bytes

    @classmethod
    def from_manifest(cls, entry: NodeEntry) -> NodeEndpoint:
        return cls(entry.name, entry.host, entry.port, entry.noise_public_key)


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """Timeouts, backoff and limits of the coordinator's sessions (seconds)."""

    connect_timeout_s: float = 3.0
    handshake_timeout_s: float = 5.0
    call_timeout_s: float = 30.0  # default for call(); covers the node's 30 s deadline
    send_timeout_s: float = 10.0
    ping_interval_s: float = 10.0  # well inside the node's 60 s idle timeout
    ping_timeout_s: float = 5.0
    backoff_initial_s: float = 0.05
    backoff_max_s: float = 5.0
    backoff_factor: float = 2.0
    backoff_jitter: float = 0.5  # each delay is scaled by a uniform factor in [1-j, 1]
    limits: Limits = field(default_factory=Limits)

    def __post_init__(self) -> None:
        if not 0 <= self.backoff_jitter < 1:
            raise ValueError("backoff_jitter must be in [0, 1)")
        if self.backoff_factor < 1 or self.backoff_initial_s <= 0:
            raise ValueError("backoff must not shrink")

    def backoff_s(self, attempt: int, uniform: float) -> float:
        """The delay before redial number ``attempt`` (0-based), ``uniform`` in [0, 1)."""
        base = min(self.backoff_max_s, self.backoff_initial_s * self.backoff_factor**attempt)
        return base * (1 - self.backoff_jitter * uniform)


@dataclass(frozen=True, slots=True)
class NodeStatistics:
    up: bool
    sessions: int  # sessions that reached "up"
    failures: int  # dials or sessions that ended in an error
    last_error: str | None  # the most recent failure (kept after a later success)


class _Slot:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None
        self.error: TkmsError | None = None


class _Session:
    """One open connection to one node."""

    def __init__(self, node: _Node, stream: trio.SocketStream, conn: Connection) -> None:
        self.node = node
        self.stream = stream
        self.conn = conn
        self.writer = ConnectionWriter(conn, stream, send_timeout_s=node.config.send_timeout_s)
        self.slots: dict[int, _Slot] = {}
        self.room = trio.lowlevel.ParkingLot()  # callers waiting for a free in-flight slot
        self.closed: str | None = None  # why the session ended
        self.scope: trio.CancelScope | None = None  # the session's nursery

    async def push(self) -> None:
        """Send what is queued (see ``shell.rpc_stream.ConnectionWriter``); a failed
        write ends the session."""
        failed = await self.writer.flush()
        if failed is not None:
            self.end(failed)

    async def receive(self) -> bool:
        """Read once and deliver the events; False once the peer has closed."""
        self.conn.receive_data(await self.stream.receive_some(RECEIVE_BYTES))
        while (event := self.conn.next_event()) is not NEED_DATA:
            if isinstance(event, ConnectionClosed):
                return False
            slot = self.slots.pop(getattr(event, "request_id", -1), None)
            if slot is None:
                continue
            if isinstance(event, ResponseReceived):
                slot.value = event.result
            elif isinstance(event, ErrorReceived):
                slot.error = RemoteError(self.node.endpoint.name, event.code, event.message)
            elif isinstance(event, ResultRejected):
                slot.error = InvalidResult(f"{self.node.endpoint.name}.result", event.reason)
            slot.done.set()
        self.room.unpark_all()
        await self.push()
        return True

    def end(self, reason: str) -> None:
        """Fail every pending call with ``NodeUnavailable`` and stop the session."""
        if self.closed is None:
            self.closed = reason
        if self.scope is not None:
            self.scope.cancel()
        for slot in self.slots.values():
            slot.error = NodeUnavailable(self.node.endpoint.name, self.closed)
            slot.done.set()
        self.slots.clear()
        self.room.unpark_all()

    async def call(self, method: Method, params: dict[str, Any]) -> Any:
        limits = self.conn.peer_limits
        cap = limits.max_in_flight if limits else 1
        while self.closed is None and self.conn.requests_in_flight >= cap:
            await self.room.park()
        if self.closed is not None or self.conn.phase is not Phase.OPEN:
            raise NodeUnavailable(self.node.endpoint.name, self.closed or "session ending")
        request_id = self.conn.send_request(method, params)  # LocalSchemaError: our bug
        slot = self.slots[request_id] = _Slot()
        try:
            await self.push()
            await slot.done.wait()
        finally:
            if not slot.done.is_set():  # cancelled (timeout): drop the late answer
                self.slots.pop(request_id, None)
                self.conn.abandon(request_id)
        if slot.error is not None:
            raise slot.error
        return slot.value


@dataclass(slots=True)
class _Node:
    endpoint: NodeEndpoint
    config: SessionConfig
    session: _Session | None = None
    changed: trio.Event = field(default_factory=trio.Event)
    sessions: int = 0
    failures: int = 0
    last_error: str | None = None

    def set_session(self, session: _Session | None) -> None:
        self.session = session
        self.changed.set()
        self.changed = trio.Event()


class SessionManager:
    """Sessions to every node of a list; create it with ``open_session_manager``."""

    def __init__(
        self,
        nodes: Iterable[NodeEndpoint],
        *,
        identity: KeyPair,
        cluster_id: bytes,
        config: SessionConfig,
        nursery: trio.Nursery,
        uniform: Callable[[], float],
    ) -> None:
        self._identity = identity
        self._cluster_id = bytes(cluster_id)
        self._config = config
        self._nursery = nursery
        self._uniform = uniform
        self._nodes: dict[str, _Node] = {}
        for endpoint in nodes:
            if endpoint.name in self._nodes:
                raise ValueError(f"node {endpoint.name} is listed twice")
            self._nodes[endpoint.name] = _Node(endpoint, config)
        self._closed = False

    def _start(self) -> None:
        for node in self._nodes.values():
            self._nursery.start_soon(self._maintain, node, name=f"session:{node.endpoint.name}")

    # -- observation ------------------------------------------------------------------

    def _node(self, name: str) -> _Node:
        try:
            return self._nodes[name]
        except KeyError:
            raise UnknownNode(f"no node named {name!r}") from None

    def is_up(self, name: str) -> bool:
        return self._node(name).session is not None

    def up_nodes(self) -> frozenset[str]:
        """Names of the nodes with an open session right now."""
        return frozenset(n for n, node in self._nodes.items() if node.session is not None)

    def statistics(self) -> Mapping[str, NodeStatistics]:
        return {
            name: NodeStatistics(
                node.session is not None, node.sessions, node.failures, node.last_error
            )
            for name, node in self._nodes.items()
        }

    async def wait_up(self, name: str, *, timeout: float) -> None:  # noqa: ASYNC109
        """Return once ``name`` has a session.

        Raises:
            NodeUnavailable: not up within ``timeout`` seconds.
            UnknownNode: no such node.
        """
        node = self._node(name)
        with trio.move_on_after(timeout):
            while node.session is None:
                await node.changed.wait()
            return
        raise NodeUnavailable(name, f"not up within {timeout} s ({node.last_error or 'no answer'})")

    async def wait_all_up(self, *, timeout: float) -> None:  # noqa: ASYNC109
        """Return once every node has a session (raises ``NodeUnavailable`` otherwise)."""
        deadline = trio.current_time() + timeout
        for name in self._nodes:
            await self.wait_up(name, timeout=max(0.0, deadline - trio.current_time()))

    # -- calls ------------------------------------------------------------------------

    async def call(
        self,
        node_name: str,
        method: Method,
        params: dict[str, Any],
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the typed Timeout is the contract
    ) -> Any:
        """Call ``method`` on ``node_name`` and return its schema-checked result.

        Raises:
            UnknownNode: no such node.
            NodeUnavailable: the node has no session, or lost it during the call.
            Timeout: no answer within ``timeout`` (default ``config.call_timeout_s``).
            RemoteError: an error response (``.code``, ``.message``).
            InvalidResult: the result fails ``method.result``.
            LocalSchemaError: ``params`` fail ``method.params`` (our own bug).
        """
        node = self._node(node_name)
        session = node.session
        if session is None:
            raise NodeUnavailable(node_name, node.last_error or "no session yet")
        limit = self._config.call_timeout_s if timeout is None else timeout
        with trio.move_on_after(limit):
            return await session.call(method, params)
        raise Timeout(node_name, method.name, limit)

    async def aclose(self) -> None:
        """Close every session and stop redialling."""
        self._closed = True
        for node in self._nodes.values():
            if node.session is not None:
                node.session.end("session manager closed")
                node.set_session(None)
        self._nursery.cancel_scope.cancel()

    # -- one task per node ------------------------------------------------------------

    async def _maintain(self, node: _Node) -> None:
        attempt = 0
        while not self._closed:
            reached_up = await self._run_session(node)
            if reached_up:
                attempt = 0
            delay = self._config.backoff_s(attempt, self._uniform())
            attempt += 1
            await trio.sleep(delay)

    async def _run_session(self, node: _Node) -> bool:
        """Dial, handshake and serve one session; True if it came up."""
        endpoint, config = node.endpoint, self._config
        try:
            with trio.fail_after(config.connect_timeout_s):
                stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
        except (OSError, trio.TooSlowError) as exc:
            return self._failed(node, f"connect failed: {exc or type(exc).__name__}", quiet=True)
        conn = Connection(
            Role.INITIATOR,
            static=self._identity,
            cluster_id=self._cluster_id,
            allowed_peers=[endpoint.noise_public_key],
            limits=config.limits,
        )
        session = _Session(node, stream, conn)
        came_up = False
        reason: str | None = None
        try:
            async with trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                reason = await _guarded(self._handshake(session))
                if reason is None:
                    came_up = True
                    node.sessions += 1
                    node.set_session(session)
                    log.info(
                        "session up with %s (%s:%d)", endpoint.name, endpoint.host, endpoint.port
                    )
                    nursery.start_soon(self._ping_loop, session)
                    reason = await _guarded(_read_all(session))
                nursery.cancel_scope.cancel()
        finally:
            reason = session.closed or reason or "session ended"
            session.end(reason)
            if node.session is session:
                node.set_session(None)
            await trio.aclose_forcefully(stream)
        if reason == "closed by the node":
            log.info("session with %s closed by the node", endpoint.name)
        else:
            self._failed(node, reason)
        return came_up

    async def _handshake(self, session: _Session) -> str:
        await session.push()
        with trio.fail_after(self._config.handshake_timeout_s):
            while session.conn.phase is not Phase.OPEN:
                if not await session.receive():
                    return "closed by the node during the handshake"
        return ""

    def _failed(self, node: _Node, reason: str, *, quiet: bool = False) -> bool:
        node.failures += 1
        if not quiet or node.last_error != reason:
            log.warning("session with %s: %s", node.endpoint.name, reason)
        node.last_error = reason
        return False

    async def _ping_loop(self, session: _Session) -> None:
        config = self._config
        while True:
            await trio.sleep(config.ping_interval_s)
            with trio.move_on_after(config.ping_timeout_s) as ping:
                try:
                    await session.call(PING, {})
                except RpcError:
                    pass  # an error response (e.g. busy) still proves the node is alive
                except NodeUnavailable:
                    return
            if ping.cancelled_caught:
                session.end(f"no answer to a ping within {config.ping_timeout_s} s")
                return


async def _read_all(session: _Session) -> str:
    while await session.receive():
        pass
    return "closed by the node"


async def _guarded(work: Awaitable[str]) -> str | None:
    """Run ``work``; the reason a session must end, or None if ``work`` returned ""."""
    try:
        return await work or None
    except trio.TooSlowError:
        return "handshake timed out"
    except TkmsError as exc:
        return f"{type(exc).__name__}: {exc}"
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        return f"stream broken: {exc or type(exc).__name__}"
    except Exception:  # a bug: contained to this node's session, but loud
        log.exception("internal error in a session")
        return "internal error"


@asynccontextmanager
async def open_session_manager(
    nodes: Iterable[NodeEndpoint],
    *,
    identity: KeyPair,
    cluster_id: bytes,
    config: SessionConfig | None = None,
    uniform: Callable[[], float] = random.random,
) -> AsyncIterator[SessionManager]:
    """Dial every node and keep the sessions up while the block runs.

    Args:
        nodes: each node's address and pinned Noise static public key.
        identity: the coordinator's Noise static key pair.
        cluster_id: the 16-byte cluster id (bound into the Noise prologue).
        config: timeouts, backoff and limits.
        uniform: the jitter source (uniform in [0, 1); not security relevant).
    """
    async with trio.open_nursery() as nursery:
        manager = SessionManager(
            nodes,
            identity=identity,
            cluster_id=cluster_id,
            config=config or SessionConfig(),
            nursery=nursery,
            uniform=uniform,
        )
        manager._start()
        try:
            yield manager
        finally:
            await manager.aclose()
