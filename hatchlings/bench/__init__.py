"""Benchmarks (`hatchlings bench …`): results are written as markdown + JSON, never asserted as timed tests."""

from ..reports import Table, write_results
from .runner import median_seconds, run_benchmark

__all__ = ["Table", "median_seconds", "run_benchmark", "write_results"]
