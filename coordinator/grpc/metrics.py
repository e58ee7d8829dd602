"""Request metrics of the gRPC front end, under cerberus' metric names.

cerberus (``internal/metrics/metrics.go``) exports, in namespace ``cerberus`` and
subsystem ``rpc_server``:

* ``cerberus_rpc_server_request_total{method, code}``: a counter per full method path
  (``/signer.v1.Signer/SignGeneric``) and grpc-go status name (``OK``,
  ``InvalidArgument``, ...);
* ``cerberus_rpc_server_request_duration_seconds{method}``: a summary.

:class:`GrpcMetrics` keeps the same names and labels so existing cerberus dashboards
keep working. The summary is exported as ``_sum`` and ``_count`` only (no quantiles).
It is self-contained and renders the Prometheus text format itself, so the HTTP
``/metrics`` handler can append :meth:`GrpcMetrics.render` to its own output.
Only served methods are recorded, so the label sets stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from protocol.grpcwire import StatusCode


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@dataclass(slots=True)
class _Duration:
    total: float = 0.0
    count: int = 0


@dataclass(slots=True)
class GrpcMetrics:
    """Counters of the gRPC server (single-threaded: trio only)."""

    namespace: str = "cerberus"
    _requests: dict[tuple[str, str], int] = field(default_factory=dict)
    _durations: dict[str, _Duration] = field(default_factory=dict)

    @property
    def request_total_name(self) -> str:
        return f"{self.namespace}_rpc_server_request_total"

    @property
    def duration_name(self) -> str:
        return f"{self.namespace}_rpc_server_request_duration_seconds"

    def observe(self, method: str, code: StatusCode, seconds: float) -> None:
        """Record one finished call of ``method`` (full path) with its status."""
        key = (method, code.go_name)
        self._requests[key] = self._requests.get(key, 0) + 1
        d = self._durations.setdefault(method, _Duration())
        d.total += max(seconds, 0.0)
        d.count += 1

    def request_total(self, method: str, code: StatusCode) -> int:
        return self._requests.get((method, code.go_name), 0)

    def render(self) -> str:
        """Prometheus text exposition (version 0.0.4) of both metrics."""
        total_help = "Total number of RPC server requests with status codes"
        lines = [
            f"# HELP {self.request_total_name} {total_help}",
            f"# TYPE {self.request_total_name} counter",
        ]
        for (method, code), n in sorted(self._requests.items()):
            lines.append(
                f'{self.request_total_name}{{method="{_escape(method)}",code="{code}"}} {n}'
            )
        lines += [
            f"# HELP {self.duration_name} Duration of RPC server requests in seconds.",
            f"# TYPE {self.duration_name} summary",
        ]
        for method, d in sorted(self._durations.items()):
            label = f'{{method="{_escape(method)}"}}'
            lines.append(f"{self.duration_name}_sum{label} {d.total!r}")
            lines.append(f"{self.duration_name}_count{label} {d.count}")
        return "\n".join(lines) + "\n"
