"""``tkms bench transport``: the Noise RPC transport between two processes on loopback.

The parent spawns the server side (``python -m cluster.bench_transport serve``: a
node listener from ``node.transport`` plus a raw TCP echo/sink server) and measures,
as the coordinator does (``coordinator.sessions`` and the sans-IO connection):

* handshake: TCP connect + hello + Noise XX until the session is open (median);
* RPC round trip: sequential calls with 200 bytes of params (p50, p99);
* throughput: 64 KiB messages, several calls in flight (MB/s = 10^6 payload bytes/s).

Each figure has a baseline measured in the same run against the same server process
without Noise or RPC (raw TCP connect, raw 200-byte echo, raw 64 KiB stream), so the
numbers read as ratios. ``--json`` prints exactly ``{"handshake_ms", "rpc_p50_ms",
"rpc_p99_ms", "throughput_mb_s"}`` (DESIGN.md, CLI contract).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import trio

from cluster.output import emit, progress
from coordinator.sessions import NodeEndpoint, SessionConfig, open_session_manager
from node.transport import ListenerConfig, Route, serve_rpc
from protocol.noise import KeyPair
from protocol.rpc import (
    NEED_DATA,
    Bytes,
    Connection,
    HandshakeComplete,
    Method,
    Nil,
    Role,
    Struct,
)

ROOT = Path(__file__).resolve().parent.parent
ECHO = Method(
    "bench.echo", Struct({"data": Bytes(max_len=1024)}), Struct({"data": Bytes(max_len=1024)})
)
SINK = Method("bench.sink", Struct({"data": Bytes(max_len=1 << 17)}), Nil())
RPC_BYTES = 200
BULK_BYTES = 64 * 1024
BULK_IN_FLIGHT = 8
TARGETS = {"handshake_ms": 3.0, "rpc_p50_ms": 0.5, "throughput_mb_s": 150.0}


def register(kinds: Any) -> None:
    parser: argparse.ArgumentParser = kinds.add_parser(
        "transport", help="Noise RPC between two processes: handshake, round trip, throughput"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    parser.add_argument("--handshakes", type=int, default=200, help="handshakes to time")
    parser.add_argument("--calls", type=int, default=2000, help="sequential RPC calls to time")
    parser.add_argument("--bulk-mb", type=int, default=128, help="MiB of 64 KiB messages to send")
    parser.set_defaults(handler=run)


# -- the server process ---------------------------------------------------------------


async def _echo(params: dict[str, Any]) -> Any:
    return params


async def _sink(params: dict[str, Any]) -> None:
    return None


async def _raw(stream: trio.SocketStream) -> None:
    """b"E": echo everything; b"S": repeatedly read a u64 length and that many bytes,
    then answer b"k"."""
    mode = await stream.receive_some(1)
    if mode == b"E":
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        return
    buf = bytearray()
    while True:
        while len(buf) < 8:
            data = await stream.receive_some(65536)
            if not data:
                return
            buf += data
        want = int.from_bytes(buf[:8], "big")
        got = len(buf) - 8
        while got < want:
            data = await stream.receive_some(1 << 20)
            if not data:
                return
            got += len(data)
        buf = bytearray()
        await stream.send_all(b"k")


async def _serve(setup: dict[str, str]) -> None:
    identity = KeyPair.from_private(bytes.fromhex(setup["node_private"]))
    async with trio.open_nursery() as nursery:
        rpc_port = await nursery.start(
            partial(
                serve_rpc,
                [Route(ECHO, _echo), Route(SINK, _sink)],
                identity=identity,
                cluster_id=bytes.fromhex(setup["cluster_id"]),
                allowed_peers=[bytes.fromhex(setup["coordinator_public"])],
                config=ListenerConfig(),
            )
        )
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, _raw, listeners)
        raw_port = listeners[0].socket.getsockname()[1]
        sys.stdout.write(json.dumps({"rpc_port": rpc_port, "raw_port": raw_port}) + "\n")
        sys.stdout.flush()
        stdin = trio.lowlevel.FdStream(sys.stdin.fileno())
        while await stdin.receive_some(4096):  # until the parent closes our stdin
            pass
        nursery.cancel_scope.cancel()


# -- the measuring side ---------------------------------------------------------------


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 4)


async def _handshake_once(port: int, coordinator: KeyPair, node_public: bytes, cid: bytes) -> float:
    start = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    try:
        conn = Connection(
            Role.INITIATOR, static=coordinator, cluster_id=cid, allowed_peers=[node_public]
        )
        await stream.send_all(conn.data_to_send())
        while True:
            conn.receive_data(await stream.receive_some(65536))
            event = conn.next_event()
            if isinstance(event, HandshakeComplete):
                await stream.send_all(conn.data_to_send())
                return time.perf_counter() - start
            if event is not NEED_DATA:
                raise RuntimeError(f"unexpected event during the handshake: {event!r}")
    finally:
        await trio.aclose_forcefully(stream)


async def _raw_connect_once(port: int) -> float:
    start = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    elapsed = time.perf_counter() - start
    await trio.aclose_forcefully(stream)
    return elapsed


async def _raw_round_trips(port: int, n: int) -> list[float]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"E")
    payload, times = bytes(RPC_BYTES), []
    for _ in range(n):
        start = time.perf_counter()
        await stream.send_all(payload)
        got = 0
        while got < RPC_BYTES:
            got += len(await stream.receive_some(65536))
        times.append(time.perf_counter() - start)
    await trio.aclose_forcefully(stream)
    return times


async def _raw_throughput(port: int, total: int) -> float:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"S")
    chunk = bytes(BULK_BYTES)
    start = time.perf_counter()
    await stream.send_all(total.to_bytes(8, "big"))
    for _ in range(total // BULK_BYTES):
        await stream.send_all(chunk)
    await stream.receive_some(1)
    elapsed = time.perf_counter() - start
    await trio.aclose_forcefully(stream)
    return total / elapsed / 1e6


async def _measure(
    args: argparse.Namespace, ports: dict[str, int], keys: dict[str, Any]
) -> dict[str, Any]:
    coordinator: KeyPair = keys["coordinator"]
    node_public: bytes = keys["node_public"]
    cid: bytes = keys["cluster_id"]
    rpc_port, raw_port = ports["rpc_port"], ports["raw_port"]
    with trio.fail_after(600):
        progress(f"handshakes ({args.handshakes}) ...")
        for _ in range(5):  # warm up
            await _handshake_once(rpc_port, coordinator, node_public, cid)
        hs = [
            await _handshake_once(rpc_port, coordinator, node_public, cid)
            for _ in range(args.handshakes)
        ]
        raw_hs = [await _raw_connect_once(raw_port) for _ in range(args.handshakes)]
        progress(f"round trips ({args.calls}) ...")
        raw_rtt = await _raw_round_trips(raw_port, args.calls)
        endpoint = NodeEndpoint("bench", "127.0.0.1", rpc_port, node_public)
        async with open_session_manager(
            [endpoint], identity=coordinator, cluster_id=cid, config=SessionConfig()
        ) as sm:
            await sm.wait_up("bench", timeout=10)
            params = {"data": bytes(RPC_BYTES)}
            for _ in range(50):
                await sm.call("bench", ECHO, params)
            rtt = []
            for _ in range(args.calls):
                start = time.perf_counter()
                await sm.call("bench", ECHO, params)
                rtt.append(time.perf_counter() - start)
            progress(f"throughput ({args.bulk_mb} MiB in 64 KiB messages) ...")
            count = args.bulk_mb * 1024 * 1024 // BULK_BYTES
            bulk = {"data": bytes(BULK_BYTES)}
            remaining = [count]

            async def sender() -> None:
                while remaining[0] > 0:
                    remaining[0] -= 1
                    await sm.call("bench", SINK, bulk)

            start = time.perf_counter()
            async with trio.open_nursery() as nursery:
                for _ in range(BULK_IN_FLIGHT):
                    nursery.start_soon(sender)
            throughput = count * BULK_BYTES / (time.perf_counter() - start) / 1e6
        raw_throughput = await _raw_throughput(raw_port, count * BULK_BYTES)
    p99 = statistics.quantiles(rtt, n=100)[98]
    raw_p99 = statistics.quantiles(raw_rtt, n=100)[98]
    return {
        "handshake_ms": _ms(statistics.median(hs)),
        "rpc_p50_ms": _ms(statistics.median(rtt)),
        "rpc_p99_ms": _ms(p99),
        "throughput_mb_s": round(throughput, 1),
        "baseline": {
            "tcp_connect_ms": _ms(statistics.median(raw_hs)),
            "tcp_rtt_p50_ms": _ms(statistics.median(raw_rtt)),
            "tcp_rtt_p99_ms": _ms(raw_p99),
            "tcp_throughput_mb_s": round(raw_throughput, 1),
        },
    }


def _human(r: dict[str, Any]) -> str:
    b = r["baseline"]
    rows = [
        (
            "handshake (connect + Noise XX)",
            r["handshake_ms"],
            "ms",
            b["tcp_connect_ms"],
            TARGETS["handshake_ms"],
        ),
        (
            "RPC round trip p50 (200 B)",
            r["rpc_p50_ms"],
            "ms",
            b["tcp_rtt_p50_ms"],
            TARGETS["rpc_p50_ms"],
        ),
        ("RPC round trip p99 (200 B)", r["rpc_p99_ms"], "ms", b["tcp_rtt_p99_ms"], None),
        (
            "throughput (64 KiB messages)",
            r["throughput_mb_s"],
            "MB/s",
            b["tcp_throughput_mb_s"],
            TARGETS["throughput_mb_s"],
        ),
    ]
    lines = [f"{'':32} {'tkms':>10} {'raw TCP':>10} {'ratio':>7}  target"]
    for name, value, unit, base, target in rows:
        ratio = value / base if base else float("inf")
        if target is None:
            verdict = ""
        elif unit == "MB/s":
            verdict = f">= {target} {'ok' if value >= target else 'MISSED'}"
        else:
            verdict = f"<= {target} {'ok' if value <= target else 'MISSED'}"
        lines.append(f"{name:32} {value:>10.3f} {base:>10.3f} {ratio:>6.2f}x  {unit} {verdict}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    coordinator, node = KeyPair.generate(), KeyPair.generate()
    cluster_id = bytes(16)
    setup = {
        "node_private": node.private.hex(),
        "coordinator_public": coordinator.public.hex(),
        "cluster_id": cluster_id.hex(),
    }
    progress("starting the server process ...")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cluster.bench_transport", "serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        if proc.stdin is None or proc.stdout is None:  # pragma: no cover - PIPE was requested
            raise RuntimeError("no pipes to the bench server process")
        proc.stdin.write(json.dumps(setup) + "\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the bench server process did not start")
        ports = json.loads(line)
        keys = {"coordinator": coordinator, "node_public": node.public, "cluster_id": cluster_id}
        result = trio.run(_measure, args, ports, keys)
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if args.json:
        emit(
            {k: result[k] for k in ("handshake_ms", "rpc_p50_ms", "rpc_p99_ms", "throughput_mb_s")},
            as_json=True,
        )
    else:
        emit(result, as_json=False, human=_human(result))
    return 0


def _serve_main() -> None:
    setup = json.loads(sys.stdin.readline())
    trio.run(_serve, setup)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        _serve_main()
    else:
        sys.exit("usage: python -m cluster.bench_transport serve (started by tkms bench transport)")
