"""Benchmarks: hftl against the usual way, in one invocation each (see docs/benchmarks.md)."""
