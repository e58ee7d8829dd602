"""The operator CLI's client for the coordinator's HTTP API (stdlib only).

``api_key(api_key_file, layout)`` finds the client API key the way DESIGN.md's CLI
conventions say: ``TKMS_API_KEY``, then ``--api-key-file``, then the cluster's
``apiKeyFile`` (the demo client's key of a local cluster). The key never comes from
the command line and is never printed.

``CoordinatorClient(base_url, api_key).request(method, path, body)`` sends one JSON
request and returns ``(status, document)``; ``call`` raises ``ApiFailure`` for any
status >= 400, carrying the API's error code and details (docs/api.md).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cluster.launcher import ClusterLayout
from protocol.errors import Fault, TkmsError

API_KEY_ENV = "TKMS_API_KEY"


class ApiKeyMissing(TkmsError):
    """No API key in TKMS_API_KEY, --api-key-file or the cluster's apiKeyFile."""

    fault: ClassVar[Fault] = Fault.CONFIG


class ApiFailure(TkmsError):
    """The coordinator refused or failed a request (its error code and details)."""

    def __init__(self, status: int, code: str, message: str, details: dict[str, Any]) -> None:
        super().__init__(f"HTTP {status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details = details

    @property
    def fault(self) -> Fault:  # type: ignore[override]
        return Fault.CLIENT if 400 <= self.status < 500 else Fault.PEER


def api_key(api_key_file: Path | None, layout: ClusterLayout | None) -> str:
    """The client API key: ``TKMS_API_KEY``, then ``api_key_file``, then the
    cluster's ``apiKeyFile``."""
    from_env = os.environ.get(API_KEY_ENV, "").strip()
    if from_env:
        return from_env
    for path in (api_key_file, layout.api_key_file if layout is not None else None):
        if path is None:
            continue
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            if path is api_key_file:
                raise ApiKeyMissing(f"cannot read --api-key-file {path}: {exc.strerror}") from None
            continue
        if key:
            return key
    raise ApiKeyMissing(
        f"no API key: set {API_KEY_ENV}, pass --api-key-file, or use a cluster dir with an "
        "apiKeyFile"
    )


@dataclass(frozen=True)
class CoordinatorClient:
    """One coordinator's HTTP API (``base_url`` like ``http://127.0.0.1:7000``)."""

    base_url: str
    key: str = field(repr=False)
    timeout_s: float = 30.0

    @classmethod
    def for_cluster(
        cls, layout: ClusterLayout, key: str, *, timeout_s: float = 30.0
    ) -> CoordinatorClient:
        return cls(f"http://{layout.http}", key, timeout_s)

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        timeout_s: float | None = None,
    ) -> tuple[int, Any]:
        """Send one request; (status, parsed JSON body or None)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.key}")
        req.add_header("Accept", "application/json")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        timeout = self.timeout_s if timeout_s is None else timeout_s
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _json(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, _json(exc.read())
        except (OSError, TimeoutError) as exc:
            raise ApiFailure(0, "unreachable", f"{self.base_url}: {exc}", {}) from None

    def call(
        self, method: str, path: str, body: Any = None, *, timeout_s: float | None = None
    ) -> Any:
        """Like ``request``, but a status >= 400 raises ``ApiFailure``."""
        status, doc = self.request(method, path, body, timeout_s=timeout_s)
        if status >= 400:
            err = doc.get("error", {}) if isinstance(doc, dict) else {}
            code = str(err.get("code", "error"))
            message = str(err.get("message", f"HTTP {status}"))
            details = {k: v for k, v in err.items() if k not in ("code", "message")}
            raise ApiFailure(status, code, message, details)
        return doc


def _json(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
