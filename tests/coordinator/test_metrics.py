"""The metrics registry renders the Prometheus text format 0.0.4."""

from __future__ import annotations

import pytest

from coordinator.metrics import MetricsError, Registry


def test_counter_gauge_histogram_render() -> None:
    reg = Registry()
    c = reg.counter("tkms_x_total", "Things.\nSecond line \\ here.", ("kind",))
    c.inc(kind="a")
    c.inc(2.5, kind='q"uo\\te\n')
    g = reg.gauge("tkms_up", "Up.")
    g.set(3)
    h = reg.histogram("tkms_lat_seconds", "Latency.", ("route",), buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 7.0):
        h.observe(v, route="/x")
    text = reg.render()
    assert text.splitlines() == [
        "# HELP tkms_lat_seconds Latency.",
        "# TYPE tkms_lat_seconds histogram",
        'tkms_lat_seconds_bucket{route="/x",le="0.1"} 2',
        'tkms_lat_seconds_bucket{route="/x",le="1"} 3',
        'tkms_lat_seconds_bucket{route="/x",le="+Inf"} 4',
        'tkms_lat_seconds_sum{route="/x"} 7.65',
        'tkms_lat_seconds_count{route="/x"} 4',
        "# HELP tkms_up Up.",
        "# TYPE tkms_up gauge",
        "tkms_up 3",
        "# HELP tkms_x_total Things.\\nSecond line \\\\ here.",
        "# TYPE tkms_x_total counter",
        'tkms_x_total{kind="a"} 1',
        'tkms_x_total{kind="q\\"uo\\\\te\\n"} 2.5',
    ]
    assert text.endswith("\n")
    assert h.count(route="/x") == 4


def test_registration_rules() -> None:
    reg = Registry()
    a = reg.counter("tkms_a_total", "A.", ("x",))
    assert reg.counter("tkms_a_total", "A again.", ("x",)) is a
    with pytest.raises(MetricsError):
        reg.gauge("tkms_a_total", "A.", ("x",))
    with pytest.raises(MetricsError):
        reg.counter("tkms_a_total", "A.", ("y",))
    for bad_name in ("1abc", "a-b", ""):
        with pytest.raises(MetricsError):
            reg.counter(bad_name, "bad")
    for bad_labels in (("le",), ("__x",), ("a", "a"), ("a-b",)):
        with pytest.raises(MetricsError):
            reg.histogram("tkms_h", "H.", bad_labels)
    with pytest.raises(MetricsError):
        reg.histogram("tkms_h2", "H.", (), buckets=(1.0, 0.5))


def test_misuse_is_refused() -> None:
    reg = Registry()
    c = reg.counter("tkms_c_total", "C.", ("node",))
    with pytest.raises(MetricsError):
        c.inc(-1, node="a")
    with pytest.raises(MetricsError):
        c.inc(node="a", extra="b")
    with pytest.raises(MetricsError):
        c.inc()
    c.set_total(5, node="a")
    with pytest.raises(MetricsError):
        c.set_total(4, node="a")
    assert c.get(node="a") == 5
    g = reg.gauge("tkms_g", "G.", ("k",))
    g.set(1, k="x")
    g.dec(3, k="x")
    assert g.get(k="x") == -2
    g.clear()
    assert "tkms_g{" not in reg.render()


def test_empty_registry_renders_nothing() -> None:
    assert Registry().render() == ""
