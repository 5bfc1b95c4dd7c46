"""Benchmarks: each script prints JSON and can rewrite its table in docs/results.md (--update-readme)."""
