"""The HTTP server shell's own limits: a client that sends a request and then stops
reading is dropped after ``send_timeout_s`` instead of holding its task forever."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing

from coordinator.http import HttpConfig
from coordinator.http.app import HttpApp
from coordinator.http.server import HttpServer
from coordinator.metrics import Registry
from tests.coordinator.http.conftest import make_backend, make_store


async def test_a_client_that_stops_reading_is_dropped(eigen_vectors: dict[str, Any]) -> None:
    config = HttpConfig(send_timeout_s=0.2)
    store, _ = make_store()
    server = HttpServer(HttpApp(make_backend(eigen_vectors), store, config, Registry()), config)
    client, server_side = trio.testing.lockstep_stream_pair()  # send_all waits for a reader
    with trio.fail_after(5):  # without the send timeout the server would wait forever
        async with trio.open_nursery() as nursery:
            nursery.start_soon(server.handle_connection, server_side)
            await client.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            # ...and never read the response.
    assert server.active == 0
