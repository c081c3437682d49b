"""Benchmarks (`hatchlings bench …`): results are written as markdown + JSON, never asserted as timed tests."""

from .runner import Table, median_seconds, run_benchmark, write_results

__all__ = ["Table", "median_seconds", "run_benchmark", "write_results"]
