"""The coordinator's session manager against live node listeners on 127.0.0.1:
pinning, reconnect after a restart, typed call errors, the in-flight cap, keepalive."""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec

import pytest
import trio

from coordinator.sessions import (
    InvalidResult,
    NodeEndpoint,
    NodeUnavailable,
    RemoteError,
    SessionConfig,
    Timeout,
    UnknownNode,
    open_session_manager,
)
from node.transport import ListenerConfig, Route, serve_rpc
from protocol.noise import KeyPair
from protocol.rpc import (
    NEED_DATA,
    Bytes,
    Connection,
    Int,
    Limits,
    LocalSchemaError,
    Method,
    Nil,
    Role,
    RpcError,
    Struct,
)

CID = b"\x7e" * 16
COORD = KeyPair.generate()
ECHO = Method(
    "test.echo", Struct({"data": Bytes(max_len=1 << 16)}), Struct({"data": Bytes(max_len=1 << 16)})
)
NAP = Method("test.nap", Struct({"ms": Int(0, 10_000)}), Nil())
FAIL = Method("test.fail", Struct({}), Nil())
COUNT = Method("test.count", Struct({}), Int(0, 1000))
FAST = SessionConfig(
    connect_timeout_s=1.0,
    handshake_timeout_s=1.0,
    call_timeout_s=2.0,
    ping_interval_s=0.2,
    ping_timeout_s=0.5,
    backoff_initial_s=0.02,
    backoff_max_s=0.2,
)


class Node:
    """A live node listener that can be stopped and restarted on the same port."""

    def __init__(self, name: str, max_in_flight: int = 32) -> None:
        self.name = name
        self.key = KeyPair.generate()
        self.port = 0
        self.calls = 0
        self.active = 0
        self.peak = 0
        self.napping = trio.Event()
        self.scope: trio.CancelScope | None = None
        self.config = ListenerConfig(limits=Limits(max_in_flight=max_in_flight))

    def endpoint(self, key: bytes | None = None) -> NodeEndpoint:
        return NodeEndpoint(self.name, "127.0.0.1", self.port, key or self.key.public)

    async def echo(self, params: dict[str, Any]) -> Any:
        self.calls += 1
        return params

    async def nap(self, params: dict[str, Any]) -> None:
        self.active += 1
        self.peak = max(self.peak, self.active)
        self.napping.set()
        try:
            await trio.sleep(params["ms"] / 1000)
        finally:
            self.active -= 1

    async def fail(self, params: dict[str, Any]) -> None:
        raise RpcError(151, "not today")

    async def count(self, params: dict[str, Any]) -> int:
        return 2000  # valid for the node's schema below, not for the coordinator's

    async def start(self, nursery: trio.Nursery) -> None:
        async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
            with trio.CancelScope() as self.scope:
                await serve_rpc(
                    [
                        Route(ECHO, self.echo),
                        Route(NAP, self.nap),
                        Route(FAIL, self.fail),
                        Route(Method("test.count", Struct({}), Int(0, 5000)), self.count),
                    ],
                    identity=self.key,
                    cluster_id=CID,
                    allowed_peers=[COORD.public],
                    port=self.port,
                    config=self.config,
                    task_status=task_status,
                )

        self.port = await nursery.start(run)

    def stop(self) -> None:
        assert self.scope is not None
        self.scope.cancel()


P = ParamSpec("P")


def fail_after(
    seconds: float,
) -> Callable[[Callable[P, Awaitable[None]]], Callable[P, Awaitable[None]]]:
    """Every I/O test runs under trio.fail_after: a hang fails instead of blocking."""

    def decorate(test: Callable[P, Awaitable[None]]) -> Callable[P, Awaitable[None]]:
        @functools.wraps(test)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            with trio.fail_after(seconds):
                await test(*args, **kwargs)

        return wrapper

    return decorate


@pytest.fixture(autouse=True)
def _log_level(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="tkms")


@fail_after(20)
async def test_dials_every_node_and_calls_them(nursery: trio.Nursery) -> None:
    a, b = Node("a"), Node("b")
    await a.start(nursery)
    await b.start(nursery)
    with trio.fail_after(10):
        async with open_session_manager(
            [a.endpoint(), b.endpoint()], identity=COORD, cluster_id=CID, config=FAST
        ) as sessions:
            await sessions.wait_all_up(timeout=5)
            assert sessions.up_nodes() == {"a", "b"}
            assert await sessions.call("a", ECHO, {"data": b"to a"}) == {"data": b"to a"}
            assert await sessions.call("b", ECHO, {"data": b"to b"}) == {"data": b"to b"}
            assert (a.calls, b.calls) == (1, 1)
            with pytest.raises(UnknownNode):
                await sessions.call("c", ECHO, {"data": b""})


@fail_after(20)
async def test_only_the_pinned_key_of_that_node_is_accepted(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    a, b = Node("a"), Node("b")
    await a.start(nursery)
    await b.start(nursery)
    with trio.fail_after(10):
        # "a" is listed with b's key: a valid cluster key, but not THAT node's.
        async with open_session_manager(
            [a.endpoint(key=b.key.public), b.endpoint()],
            identity=COORD,
            cluster_id=CID,
            config=FAST,
        ) as sessions:
            await sessions.wait_up("b", timeout=5)
            with pytest.raises(NodeUnavailable, match="PeerNotAllowed"):
                await sessions.wait_up("a", timeout=0.5)
            with pytest.raises(NodeUnavailable):
                await sessions.call("a", ECHO, {"data": b"x"})
            stats = sessions.statistics()["a"]
            assert not stats.up and stats.sessions == 0 and stats.failures >= 1
            assert a.calls == 0
    assert any(
        "PeerNotAllowed" in r.getMessage() for r in caplog.records if r.name == "tkms.sessions"
    )


@fail_after(20)
async def test_reconnects_after_the_listener_restarts(nursery: trio.Nursery) -> None:
    node = Node("n")
    await node.start(nursery)
    with trio.fail_after(15):
        async with open_session_manager(
            [node.endpoint()], identity=COORD, cluster_id=CID, config=FAST
        ) as sessions:
            await sessions.wait_up("n", timeout=5)
            pending: list[BaseException] = []

            async def doomed_call() -> None:
                try:
                    await sessions.call("n", NAP, {"ms": 5000})
                except NodeUnavailable as exc:
                    pending.append(exc)

            async with trio.open_nursery() as inner:
                inner.start_soon(doomed_call)
                await node.napping.wait()
                node.stop()  # the node goes away with a call in flight
            assert len(pending) == 1  # ...which fails at once, not at its timeout
            while sessions.is_up("n"):  # noqa: ASYNC110 - polls public state
                await trio.sleep(0.01)
            with pytest.raises(NodeUnavailable):
                await sessions.call("n", ECHO, {"data": b"x"})
            await trio.sleep(0.3)  # a few failed redials with backoff
            await node.start(nursery)  # same port
            await sessions.wait_up("n", timeout=5)
            assert await sessions.call("n", ECHO, {"data": b"back"}) == {"data": b"back"}
            stats = sessions.statistics()["n"]
            assert stats.sessions == 2 and stats.failures >= 2


@fail_after(20)
async def test_typed_call_errors(nursery: trio.Nursery) -> None:
    node = Node("n")
    await node.start(nursery)
    with trio.fail_after(10):
        async with open_session_manager(
            [node.endpoint()], identity=COORD, cluster_id=CID, config=FAST
        ) as sessions:
            await sessions.wait_up("n", timeout=5)
            with pytest.raises(Timeout):
                await sessions.call("n", NAP, {"ms": 1000}, timeout=0.1)
            with pytest.raises(RemoteError) as remote:
                await sessions.call("n", FAIL, {})
            assert (remote.value.code, remote.value.message, remote.value.node) == (
                151,
                "not today",
                "n",
            )
            with pytest.raises(InvalidResult):
                await sessions.call("n", COUNT, {})
            with pytest.raises(LocalSchemaError):
                await sessions.call("n", ECHO, {"data": "not bytes"})
            # The session survived all of it; the late answer of the timed-out call was dropped.
            assert await sessions.call("n", ECHO, {"data": b"ok"}) == {"data": b"ok"}
            assert sessions.statistics()["n"].sessions == 1


@fail_after(20)
async def test_calls_above_the_nodes_in_flight_cap_wait_for_a_slot(nursery: trio.Nursery) -> None:
    node = Node("n", max_in_flight=2)
    await node.start(nursery)
    with trio.fail_after(10):
        async with open_session_manager(
            [node.endpoint()], identity=COORD, cluster_id=CID, config=FAST
        ) as sessions:
            await sessions.wait_up("n", timeout=5)
            done = 0

            async def one() -> None:
                nonlocal done
                await sessions.call("n", NAP, {"ms": 30})
                done += 1

            async with trio.open_nursery() as inner:
                for _ in range(8):
                    inner.start_soon(one)
            assert done == 8 and node.peak == 2


@fail_after(20)
async def test_a_node_that_stops_answering_is_detected_by_the_keepalive(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    """A fake node that completes the handshake and then never answers anything."""
    key = KeyPair.generate()
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def mute(stream: trio.SocketStream) -> None:
        conn = Connection(Role.RESPONDER, static=key, cluster_id=CID, allowed_peers=[COORD.public])
        await stream.send_all(conn.data_to_send())
        while data := await stream.receive_some(65536):
            conn.receive_data(data)
            while conn.next_event() is not NEED_DATA:
                pass
            await stream.send_all(conn.data_to_send())  # handshake only; requests ignored

    nursery.start_soon(trio.serve_listeners, mute, listeners)
    with trio.fail_after(10):
        async with open_session_manager(
            [NodeEndpoint("mute", "127.0.0.1", port, key.public)],
            identity=COORD,
            cluster_id=CID,
            config=FAST,
        ) as sessions:
            await sessions.wait_up("mute", timeout=5)
            while sessions.statistics()["mute"].failures == 0:  # noqa: ASYNC110
                await trio.sleep(0.05)
            assert "no answer to a ping" in (sessions.statistics()["mute"].last_error or "")


def test_backoff_grows_to_its_cap_with_jitter_below_it() -> None:
    config = SessionConfig(
        backoff_initial_s=0.1, backoff_max_s=2.0, backoff_factor=2.0, backoff_jitter=0.5
    )
    assert [config.backoff_s(n, 0.0) for n in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0]
    assert config.backoff_s(10, 0.0) == 2.0
    assert config.backoff_s(10, 0.999) == pytest.approx(1.001)
    with pytest.raises(ValueError):
        SessionConfig(backoff_jitter=1.0)
