"""Benchmarks run by `make bench` (python -m bench): side-by-side tables, not timed tests."""
