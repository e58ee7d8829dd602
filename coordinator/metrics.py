"""A tiny metrics registry rendering the Prometheus text exposition format (0.0.4).

Counters, gauges and histograms, each a *family* with a fixed tuple of label names.
No background threads, no global collectors: a ``Registry`` is a plain object the
coordinator creates once and hands to every module that counts something (the HTTP
front end, the gRPC front end, the signing aggregator); ``render()`` writes the text
a Prometheus scraper reads from ``GET /metrics``.

Everything runs on the trio thread, so no locking. Registering the same name twice
with the same type and labels returns the existing family (modules may each ask for
it); a conflicting re-registration is a ``MetricsError``.

Usage::

    reg = Registry()
    hits = reg.counter("tkms_sign_total", "Signatures served.", ("key_id",))
    hits.inc(key_id="k1")
    lat = reg.histogram("tkms_sign_seconds", "Sign latency.", ("key_id",))
    lat.observe(0.012, key_id="k1")
    text = reg.render()
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import ClassVar, TypeVar

from protocol.errors import Fault, TkmsError

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Seconds; covers a 1 ms local call up to a 10 s DKG phase.
DEFAULT_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

_NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_RE = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")

LabelValues = tuple[str, ...]


class MetricsError(TkmsError):
    """A metric used or registered inconsistently (a programming error)."""

    fault: ClassVar[Fault] = Fault.LOCAL


def _format_value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(float(v))


def _escape_label(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n")


def _label_text(names: Sequence[str], values: Sequence[str]) -> str:
    if not names:
        return ""
    inner = ",".join(f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True))
    return "{" + inner + "}"


class _Family:
    kind: ClassVar[str] = ""

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        if not _NAME_RE.match(name):
            raise MetricsError(f"invalid metric name {name!r}")
        for ln in label_names:
            if not _LABEL_RE.match(ln) or ln.startswith("__") or ln == "le":
                raise MetricsError(f"invalid label name {ln!r} for {name}")
        if len(set(label_names)) != len(label_names):
            raise MetricsError(f"duplicate label names for {name}")
        self.name = name
        self.help = help_text
        self.label_names: tuple[str, ...] = tuple(label_names)

    def _key(self, labels: dict[str, str]) -> LabelValues:
        if set(labels) != set(self.label_names):
            raise MetricsError(
                f"{self.name} takes labels {list(self.label_names)}, got {sorted(labels)}"
            )
        return tuple(str(labels[n]) for n in self.label_names)

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def samples(self) -> list[str]:  # pragma: no cover - overridden
        raise NotImplementedError


class Counter(_Family):
    """A monotonically increasing count per label set."""

    kind = "counter"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise MetricsError(f"{self.name}: a counter cannot decrease")
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def set_total(self, total: float, **labels: str) -> None:
        """Mirror a cumulative count kept elsewhere (e.g. the aggregator's per-node
        failure count); the value must never go down."""
        key = self._key(labels)
        if total < self._values.get(key, 0.0):
            raise MetricsError(f"{self.name}: a counter cannot decrease")
        self._values[key] = float(total)

    def get(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.label_names, k)} {_format_value(v)}"
            for k, v in sorted(self._values.items())
        ]


class Gauge(_Family):
    """A value that goes up and down per label set."""

    kind = "gauge"

    def __init__(self, name: str, help_text: str, label_names: Sequence[str]) -> None:
        super().__init__(name, help_text, label_names)
        self._values: dict[LabelValues, float] = {}

    def set(self, value: float, **labels: str) -> None:
        self._values[self._key(labels)] = float(value)

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        key = self._key(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def dec(self, amount: float = 1.0, **labels: str) -> None:
        self.inc(-amount, **labels)

    def get(self, **labels: str) -> float:
        return self._values.get(self._key(labels), 0.0)

    def clear(self) -> None:
        """Forget every label set (for gauges rebuilt from a snapshot)."""
        self._values.clear()

    def samples(self) -> list[str]:
        return [
            f"{self.name}{_label_text(self.label_names, k)} {_format_value(v)}"
            for k, v in sorted(self._values.items())
        ]


class Histogram(_Family):
    """Observations counted into cumulative buckets (``le``), with sum and count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help_text: str,
        label_names: Sequence[str],
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> None:
        super().__init__(name, help_text, label_names)
        bounds = [float(b) for b in buckets if not math.isinf(b)]
        if not bounds or sorted(set(bounds)) != bounds:
            raise MetricsError(f"{name}: buckets must be strictly increasing")
        self.buckets: tuple[float, ...] = (*bounds, math.inf)
        # per label set: counts per bucket (non-cumulative), sum, count
        self._counts: dict[LabelValues, list[int]] = {}
        self._sums: dict[LabelValues, float] = {}

    def observe(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        counts = self._counts.setdefault(key, [0] * len(self.buckets))
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                counts[i] += 1
                break
        self._sums[key] = self._sums.get(key, 0.0) + value

    def count(self, **labels: str) -> int:
        return sum(self._counts.get(self._key(labels), []))

    def samples(self) -> list[str]:
        out: list[str] = []
        names = (*self.label_names, "le")
        for key in sorted(self._counts):
            cumulative = 0
            for bound, c in zip(self.buckets, self._counts[key], strict=True):
                cumulative += c
                le = "+Inf" if math.isinf(bound) else _format_value(bound)
                out.append(f"{self.name}_bucket{_label_text(names, (*key, le))} {cumulative}")
            lt = _label_text(self.label_names, key)
            out.append(f"{self.name}_sum{lt} {_format_value(self._sums[key])}")
            out.append(f"{self.name}_count{lt} {cumulative}")
        return out


_F = TypeVar("_F", bound=_Family)


class Registry:
    """The set of metric families one process exposes."""

    def __init__(self) -> None:
        self._families: dict[str, _Family] = {}

    def _register(self, family: _F) -> _F:
        existing = self._families.get(family.name)
        if existing is None:
            self._families[family.name] = family
            return family
        if type(existing) is not type(family) or existing.label_names != family.label_names:
            raise MetricsError(f"metric {family.name} already registered differently")
        return existing

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        return self._register(Counter(name, help_text, labels))

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        return self._register(Gauge(name, help_text, labels))

    def histogram(
        self,
        name: str,
        help_text: str,
        labels: Sequence[str] = (),
        buckets: Sequence[float] = DEFAULT_BUCKETS,
    ) -> Histogram:
        return self._register(Histogram(name, help_text, labels, buckets))

    def names(self) -> Iterable[str]:
        return tuple(self._families)

    def render(self) -> str:
        """The whole registry in the Prometheus text format (ends with a newline)."""
        lines: list[str] = []
        for name in sorted(self._families):
            fam = self._families[name]
            lines.extend(fam.header())
            lines.extend(fam.samples())
        return "\n".join(lines) + "\n" if lines else ""
