"""Benchmarks: `python -m bench.run_all`, or one script at a time (see bench/README.md)."""
