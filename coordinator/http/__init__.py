"""The coordinator's client HTTP API (JSON under ``/v1``, plus ``/healthz`` and
``/metrics``): h11 over trio, our own small router, no framework. See
``docs/api.md`` for the endpoints and ``docs/openapi.yaml`` for the schema.

Public entry points: ``serve_http(backend, auth, *, config, metrics=None,
task_status)``, ``HttpConfig``, ``TlsConfig``, ``HttpConfigError``, ``HttpApp``,
``http_config_for(CoordinatorConfig)``.
"""

from coordinator.http.app import HttpApp
from coordinator.http.config import HttpConfig, HttpConfigError, TlsConfig, http_config_for
from coordinator.http.server import serve_http

__all__ = [
    "HttpApp",
    "HttpConfig",
    "HttpConfigError",
    "TlsConfig",
    "http_config_for",
    "serve_http",
]
