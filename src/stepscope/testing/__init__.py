"""Synthetic records and results comparison, for tests and benchmarks."""
