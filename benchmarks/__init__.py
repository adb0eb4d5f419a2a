"""Benchmarks whose figures are recorded in RESULTS.md."""
