"""Benchmarks: not tests; each runs against the real broker and database (see README.md)."""
