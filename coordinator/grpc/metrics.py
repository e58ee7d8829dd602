"""Request metrics of the gRPC front end, under cerberus' metric names.

cerberus (``internal/metrics/metrics.go``) exports, in namespace ``cerberus`` and
subsystem ``rpc_server``:

* ``cerberus_rpc_server_request_total{method, code}``: a counter per full method path
  (``/signer.v1.Signer/SignGeneric``) and grpc-go status name (``OK``,
  ``InvalidArgument``, ...);
* ``cerberus_rpc_server_request_duration_seconds{method}``: a summary.

:class:`GrpcMetrics` registers the same names and labels in the coordinator's
``coordinator.metrics.Registry`` (its own one if none is given), so existing cerberus
dashboards keep working and ``GET /metrics`` shows them with everything else. The
duration is a histogram there (the registry has no summaries): its ``_sum`` and
``_count`` series are the summary's. Only served methods are recorded, so the label
sets stay bounded.
"""

from __future__ import annotations

from coordinator.metrics import Registry
from protocol.grpcwire import StatusCode

REQUEST_TOTAL_HELP = "Total number of RPC server requests with status codes"
DURATION_HELP = "Duration of RPC server requests in seconds."


class GrpcMetrics:
    """Counters of the gRPC server (trio thread only, like the registry)."""

    def __init__(self, registry: Registry | None = None, *, namespace: str = "cerberus") -> None:
        self.registry = registry if registry is not None else Registry()
        self._total = self.registry.counter(
            f"{namespace}_rpc_server_request_total", REQUEST_TOTAL_HELP, ("method", "code")
        )
        self._duration = self.registry.histogram(
            f"{namespace}_rpc_server_request_duration_seconds", DURATION_HELP, ("method",)
        )

    def observe(self, method: str, code: StatusCode, seconds: float) -> None:
        """Record one finished call of ``method`` (full path) with its status."""
        self._total.inc(method=method, code=code.go_name)
        self._duration.observe(max(seconds, 0.0), method=method)

    def request_total(self, method: str, code: StatusCode) -> int:
        return int(self._total.get(method=method, code=code.go_name))

    def render(self) -> str:
        """The registry in the Prometheus text format."""
        return self.registry.render()
