"""Operator tooling: the ``tkms`` CLI, the local launcher, manifests, benchmarks, chaos."""
