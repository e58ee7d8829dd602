"""cluster/client.py: the API key lookup order of DESIGN.md's CLI conventions
(TKMS_API_KEY, then --api-key-file, then the cluster's apiKeyFile) and the small
HTTP client against a real loopback server (bearer header, JSON, typed refusals)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from cluster.client import ApiFailure, ApiKeyMissing, CoordinatorClient, api_key
from cluster.launcher import ClusterLayout
from protocol.errors import Fault


def layout_with_key(tmp_path: Path, key: str | None) -> ClusterLayout:
    path = tmp_path / "demo-client.key"
    if key is not None:
        path.write_text(key + "\n")
    return ClusterLayout(tmp_path, "00" * 16, 2, (), tmp_path / "c.toml", "h:1", "g:2", path)


def test_api_key_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = layout_with_key(tmp_path, "from-cluster")
    given = tmp_path / "given.key"
    given.write_text("from-file\n")
    monkeypatch.setenv("TKMS_API_KEY", "from-env")
    assert api_key(given, layout) == "from-env"
    monkeypatch.delenv("TKMS_API_KEY")
    assert api_key(given, layout) == "from-file"
    assert api_key(None, layout) == "from-cluster"
    with pytest.raises(ApiKeyMissing, match="cannot read --api-key-file"):
        api_key(tmp_path / "missing.key", layout)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ApiKeyMissing, match="TKMS_API_KEY"):
        api_key(None, layout_with_key(tmp_path / "empty", None))


class Handler(BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str, str | None, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        Handler.seen.append(("POST", self.path, self.headers.get("Authorization"), body))
        doc = {"error": {"code": "ceremony_aborted", "message": "no", "missed": ["node3"]}}
        self._send(502, doc)

    def do_GET(self) -> None:
        Handler.seen.append(("GET", self.path, self.headers.get("Authorization"), b""))
        self._send(200, {"ok": True})

    def _send(self, status: int, doc: object) -> None:
        raw = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def server() -> Iterator[str]:
    httpd = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_client_sends_the_bearer_key_and_types_refusals(server: str) -> None:
    client = CoordinatorClient(server, "tkms_secret", timeout_s=5)
    assert "tkms_secret" not in repr(client)
    assert client.call("GET", "/v1/keys") == {"ok": True}
    with pytest.raises(ApiFailure) as info:
        client.call("POST", "/v1/dkg", {"keyId": "k", "threshold": 2})
    failure = info.value
    assert (failure.status, failure.code, failure.details) == (
        502,
        "ceremony_aborted",
        {"missed": ["node3"]},
    )
    assert failure.fault is Fault.PEER
    method, path, auth, body = Handler.seen[-1]
    assert (method, path, auth) == ("POST", "/v1/dkg", "Bearer tkms_secret")
    assert json.loads(body) == {"keyId": "k", "threshold": 2}
    unreachable = CoordinatorClient("http://127.0.0.1:1", "k", timeout_s=2)
    with pytest.raises(ApiFailure, match="unreachable"):
        unreachable.call("GET", "/healthz")
