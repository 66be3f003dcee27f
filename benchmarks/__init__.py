"""Benchmarks of the worker (not part of the product): `make bench` or `python -m benchmarks`."""
