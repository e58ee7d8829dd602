"""The node's RPC listener, live on 127.0.0.1 with real sockets: pinning, refusals
before any RPC, schemas, deadlines, the in-flight cap, handler failures, timeouts,
and hypothesis driving bad bytes into every phase of live connections while a good
session on the same listener keeps working."""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ParamSpec

import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from node.transport import ListenerConfig, Route, serve_rpc
from protocol.errors import DecodeError
from protocol.noise import DecryptError, KeyPair
from protocol.rpc import (
    NEED_DATA,
    PING,
    Bytes,
    Connection,
    ConnectionClosed,
    ErrorCode,
    ErrorReceived,
    Event,
    Int,
    Limits,
    Method,
    Nil,
    Phase,
    ResponseReceived,
    Role,
    RpcError,
    Struct,
    VersionMismatch,
)
from protocol.rpc.messages import frame

CID = b"\x5a" * 16
NODE = KeyPair.generate()
COORD = KeyPair.generate()
ECHO = Method(
    "test.echo", Struct({"data": Bytes(max_len=1 << 16)}), Struct({"data": Bytes(max_len=1 << 16)})
)
SLOW = Method("test.slow", Struct({}), Nil())
BOOM = Method("test.boom", Struct({"kind": Int(0, 3)}), Nil())
BAD_RESULT = Method("test.bad_result", Struct({}), Int(0, 1))
CONFIG = ListenerConfig(
    handshake_timeout_s=1.0,
    idle_timeout_s=3.0,
    request_timeout_s=0.5,
    send_timeout_s=2.0,
    max_connections=16,
    limits=Limits(max_frame_bytes=4096, max_message_bytes=64 * 1024, max_in_flight=4),
)


class Handlers:
    """The listener's handlers; ``ran`` records every call that reached one."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    async def echo(self, params: dict[str, Any]) -> Any:
        self.ran.append("echo")
        return params

    async def slow(self, params: dict[str, Any]) -> None:
        self.ran.append("slow")
        await trio.sleep_forever()

    async def boom(self, params: dict[str, Any]) -> None:
        self.ran.append("boom")
        if params["kind"] == 0:
            raise ValueError("secret detail that must not reach the peer")
        if params["kind"] == 1:
            raise RpcError(150, "refused by policy")
        raise DecodeError("params.thing", "semantically wrong")

    async def bad_result(self, params: dict[str, Any]) -> Any:
        self.ran.append("bad_result")
        return 7

    def routes(self) -> list[Route]:
        return [
            Route(ECHO, self.echo),
            Route(SLOW, self.slow),
            Route(BOOM, self.boom),
            Route(BAD_RESULT, self.bad_result),
        ]


@dataclass
class Server:
    port: int
    handlers: Handlers


async def start_server(nursery: trio.Nursery, config: ListenerConfig = CONFIG) -> Server:
    handlers = Handlers()

    async def run(task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        await serve_rpc(
            handlers.routes(),
            identity=NODE,
            cluster_id=CID,
            allowed_peers=[COORD.public],
            config=config,
            task_status=task_status,
        )

    port: int = await nursery.start(run)
    return Server(port, handlers)


@pytest.fixture
async def server(nursery: trio.Nursery) -> AsyncIterator[Server]:
    yield await start_server(nursery)


class RawClient:
    """A coordinator-side connection driven by hand (the sans-IO Connection)."""

    def __init__(self, stream: trio.SocketStream, conn: Connection) -> None:
        self.stream, self.conn = stream, conn
        self.local_port: int = stream.socket.getsockname()[1]

    @classmethod
    async def connect(
        cls,
        port: int,
        *,
        key: KeyPair = COORD,
        cluster_id: bytes = CID,
        version: int = 1,
        handshake: bool = True,
    ) -> RawClient:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        conn = Connection(
            Role.INITIATOR,
            static=key,
            cluster_id=cluster_id,
            allowed_peers=[NODE.public],
            version=version,
        )
        client = cls(stream, conn)
        if handshake:
            await client.flush()
            while conn.phase is not Phase.OPEN:
                await client.events()
            await client.flush()  # message 3
        return client

    async def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            await self.stream.send_all(data)

    async def events(self) -> list[Event]:
        data = await self.stream.receive_some(65536)
        self.conn.receive_data(data)
        out = []
        while (event := self.conn.next_event()) is not NEED_DATA:
            out.append(event)
            if isinstance(event, ConnectionClosed):
                break
        return out

    async def call(self, method: Method, params: dict[str, Any]) -> Event:
        rid = self.conn.send_request(method, params)
        await self.flush()
        while True:
            for event in await self.events():
                if getattr(event, "request_id", None) == rid or isinstance(event, ConnectionClosed):
                    return event

    async def wait_closed(self) -> None:
        """Read until the server closes the connection (EOF or reset)."""
        try:
            while await self.stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)


def closing_reasons(caplog: pytest.LogCaptureFixture, client_port: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tkms.transport"
        and r.levelno >= logging.WARNING
        and f"127.0.0.1:{client_port}:" in r.getMessage()
    ]


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


# -- the good path and the RPC rules ------------------------------------------------------


@fail_after(10)
async def test_calls_and_builtin_ping(server: Server) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port)
        answer = await client.call(ECHO, {"data": b"hello"})
        assert isinstance(answer, ResponseReceived) and answer.result == {"data": b"hello"}
        pong = await client.call(PING, {})
        assert isinstance(pong, ResponseReceived) and pong.result is None
        big = bytes(range(256)) * 200  # 51,200 bytes: 13 frames of 4,096
        answer = await client.call(ECHO, {"data": big})
        assert isinstance(answer, ResponseReceived) and answer.result["data"] == big
        await client.aclose()


@fail_after(10)
async def test_schema_violation_is_answered_and_the_handler_never_runs(server: Server) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port)
        lax = Method("test.echo", Struct({"data": Int(0, 5)}), Nil())
        answer = await client.call(lax, {"data": 3})
        assert isinstance(answer, ErrorReceived) and answer.code == ErrorCode.INVALID_PARAMS
        assert "params.data" in answer.message
        unknown = Method("test.nope", Struct({}), Nil())
        answer = await client.call(unknown, {})
        assert isinstance(answer, ErrorReceived) and answer.code == ErrorCode.UNKNOWN_METHOD
        assert server.handlers.ran == []
        answer = await client.call(BAD_RESULT, {})  # the node checks its own results too
        assert isinstance(answer, ErrorReceived) and answer.code == ErrorCode.INTERNAL
        await client.aclose()


@fail_after(10)
async def test_per_request_deadline(server: Server) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port)
        start = trio.current_time()
        answer = await client.call(SLOW, {})
        assert isinstance(answer, ErrorReceived) and answer.code == ErrorCode.DEADLINE_EXCEEDED
        assert trio.current_time() - start >= CONFIG.request_timeout_s
        # The connection is still good afterwards.
        assert isinstance(await client.call(ECHO, {"data": b"x"}), ResponseReceived)
        await client.aclose()


@fail_after(10)
async def test_requests_in_flight_cap(server: Server) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port)
        assert client.conn.peer_limits is not None and client.conn.peer_limits.max_in_flight == 4
        client.conn._peer_limits = Limits(max_in_flight=10)  # a client ignoring the cap
        ids = [client.conn.send_request(SLOW, {}) for _ in range(5)]
        await client.flush()
        answers: dict[int, int] = {}
        while len(answers) < 5:
            for event in await client.events():
                assert isinstance(event, ErrorReceived)
                answers[event.request_id] = event.code
        assert answers[ids[4]] == ErrorCode.BUSY  # answered at once, before the deadlines
        assert [answers[i] for i in ids[:4]] == [ErrorCode.DEADLINE_EXCEEDED] * 4
        assert server.handlers.ran == ["slow"] * 4
        await client.aclose()


@fail_after(10)
async def test_handler_failures_become_error_responses(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port)
        bug = await client.call(BOOM, {"kind": 0})
        assert isinstance(bug, ErrorReceived) and bug.code == ErrorCode.INTERNAL
        assert "secret" not in bug.message
        policy = await client.call(BOOM, {"kind": 1})
        assert isinstance(policy, ErrorReceived) and (policy.code, policy.message) == (
            150,
            "refused by policy",
        )
        bad = await client.call(BOOM, {"kind": 2})
        assert isinstance(bad, ErrorReceived) and bad.code == ErrorCode.BAD_REQUEST
        assert "params.thing" in bad.message
        assert isinstance(await client.call(ECHO, {"data": b"still"}), ResponseReceived)
        await client.aclose()
    assert any(
        "handler of test.boom failed" in r.getMessage() and r.exc_info for r in caplog.records
    )


# -- refusals before any RPC -------------------------------------------------------------


@fail_after(10)
async def test_unknown_static_key_is_refused_before_any_rpc(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port, key=KeyPair.generate())
        client.conn.send_request(ECHO, {"data": b"sneaky"})  # right behind message 3
        await client.flush()
        await client.wait_closed()
    (reason,) = closing_reasons(caplog, client.local_port)
    assert "PeerNotAllowed" in reason
    assert server.handlers.ran == []


@fail_after(10)
async def test_other_cluster_is_refused_before_any_rpc(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port, cluster_id=b"\x00" * 16, handshake=False)
        await client.flush()
        with pytest.raises(DecryptError):  # message 2 does not decrypt for the client
            while True:
                await client.events()
        port = client.local_port
        await client.aclose()
        while not closing_reasons(caplog, port):  # noqa: ASYNC110 - waits for a log line
            await trio.sleep(0.01)
    assert "during the handshake" in closing_reasons(caplog, port)[0]
    assert server.handlers.ran == []


@fail_after(10)
async def test_other_version_is_refused_before_the_handshake(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    with trio.fail_after(5):
        client = await RawClient.connect(server.port, version=2, handshake=False)
        await client.flush()
        with pytest.raises(VersionMismatch) as info:
            while True:
                await client.events()
        assert (info.value.ours, info.value.theirs) == (2, 1)
        await client.wait_closed()
    (reason,) = closing_reasons(caplog, client.local_port)
    assert "VersionMismatch" in reason and "version 2 (newer)" in reason
    assert server.handlers.ran == []


# -- timeouts and connection limits --------------------------------------------------------


@fail_after(10)
async def test_handshake_and_idle_timeouts(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    quick = ListenerConfig(handshake_timeout_s=0.3, idle_timeout_s=0.6, request_timeout_s=0.2)
    srv = await start_server(nursery, quick)
    with trio.fail_after(5):
        silent = await RawClient.connect(srv.port, handshake=False)
        idle = await RawClient.connect(srv.port)
        await silent.wait_closed()
        await idle.wait_closed()
    assert "handshake not finished within 0.3 s" in closing_reasons(caplog, silent.local_port)[0]
    assert "idle for 0.6 s" in closing_reasons(caplog, idle.local_port)[0]


@fail_after(10)
async def test_connection_cap(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    srv = await start_server(nursery, ListenerConfig(max_connections=2))
    with trio.fail_after(5):
        first = await RawClient.connect(srv.port)
        second = await RawClient.connect(srv.port)
        third = await RawClient.connect(srv.port, handshake=False)
        await third.wait_closed()
        assert any("2 connections already open" in r.getMessage() for r in caplog.records)
        assert isinstance(await first.call(PING, {}), ResponseReceived)
        assert isinstance(await second.call(PING, {}), ResponseReceived)


# -- hypothesis: bad bytes into every phase of live connections ---------------------------


@dataclass(frozen=True)
class Plan:
    stage: str  # "hello" | "handshake" | "open"
    mutation: str  # "garbage" | "truncated" | "replayed" | "reordered" | "oversized"
    garbage: bytes
    framed: bool
    cut: int
    oversize: int


STAGES = ["hello", "handshake", "open"]
MUTATIONS = ["garbage", "truncated", "replayed", "reordered", "oversized"]
plans = st.builds(
    Plan,
    stage=st.sampled_from(STAGES),
    mutation=st.sampled_from(MUTATIONS),
    garbage=st.binary(min_size=1, max_size=200),
    framed=st.booleans(),
    cut=st.integers(1, 10_000),
    oversize=st.integers(CONFIG.limits.max_frame_bytes + 1, 65535),
)


async def attack(port: int, plan: Plan) -> int:
    """Open a connection, bring it to ``plan.stage``, send the bad bytes and EOF,
    wait for the server to close it; returns the attacker's local port."""
    client = await RawClient.connect(port, handshake=False)
    first = client.conn.data_to_send()  # hello + message 1
    seen: list[bytes] = []
    if plan.stage == "hello":
        valid = [first[:6], first[6:]]
    else:
        await client.stream.send_all(first)
        while client.conn.phase is not Phase.OPEN:
            await client.events()
        msg3 = client.conn.data_to_send()
        seen = [first[6:]]
        valid = [msg3]
        if plan.stage == "open":
            await client.stream.send_all(msg3)
            assert isinstance(await client.call(ECHO, {"data": b"0"}), ResponseReceived)
            client.conn.send_request(ECHO, {"data": b"r0"})
            seen = [client.conn.data_to_send()]
            await client.stream.send_all(seen[0])
            valid = []
            for n in (1, 2):
                client.conn.send_request(ECHO, {"data": b"r%d" % n})
                valid.append(client.conn.data_to_send())
    if plan.mutation == "garbage":
        bad = frame(plan.garbage) if plan.framed else plan.garbage
    elif plan.mutation == "truncated":
        last = valid[-1]
        bad = b"".join(valid[:-1]) + last[: 1 + plan.cut % (len(last) - 1)]
    elif plan.mutation == "replayed":
        bad = seen[-1] if seen else b"".join(valid)
    elif plan.mutation == "reordered":
        bad = valid[1] + valid[0] if len(valid) > 1 else valid[0][3:] + valid[0][:3]
    else:
        bad = plan.oversize.to_bytes(2, "big") + plan.garbage
    await client.stream.send_all(bad)
    await client.stream.send_eof()
    await client.wait_closed()
    await client.aclose()
    return client.local_port


@fail_after(10)
async def test_bad_bytes_in_every_phase_close_only_that_connection(
    server: Server, caplog: pytest.LogCaptureFixture
) -> None:
    good = await RawClient.connect(server.port)
    calls = 0
    kinds: set[str] = set()

    async def good_call() -> None:
        nonlocal calls
        calls += 1
        with trio.fail_after(5):
            answer = await good.call(ECHO, {"data": b"%d" % calls})
        assert isinstance(answer, ResponseReceived) and answer.result == {"data": b"%d" % calls}

    async def one(plan: Plan) -> str:
        with trio.fail_after(5):
            client_port = await attack(server.port, plan)
        reasons = closing_reasons(caplog, client_port)
        assert len(reasons) == 1, (plan, reasons)
        await good_call()
        return reasons[0].split(": ", 1)[1].split(" ")[0]

    @settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
    @given(plan=plans)
    def drive(plan: Plan) -> None:
        kind = trio.from_thread.run(one, plan)
        kinds.add(f"{plan.stage}/{plan.mutation}: {kind}")

    for stage in STAGES:  # every phase x every mutation runs at least once
        for mutation in MUTATIONS:
            drive = example(plan=Plan(stage, mutation, b"\x00" * 20, True, 7, 5000))(drive)

    await trio.to_thread.run_sync(drive)
    assert calls >= 80
    # Each phase saw its characteristic failures.
    for expected in (
        "hello/garbage: FrameError",
        "open/replayed: DecryptError",
        "open/reordered: DecryptError",
        "open/oversized: FrameError",
        "handshake/oversized: FrameError",
        "handshake/replayed: MalformedMessage",
    ):
        assert expected in kinds, kinds
    await good_call()  # the same good session, still open after every example
    assert good.conn.statistics().phase is Phase.OPEN
    # Only ECHO calls of the good session and of attacks that got as far as "open" ran.
    assert set(server.handlers.ran) == {"echo"}
    # Nothing was a bug, and no log line carries the node's private key.
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not [r for r in caplog.records if NODE.private.hex() in r.getMessage()]
    await good.aclose()
