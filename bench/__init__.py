"""Benchmarks: each script prints JSON and can rewrite its table in the README (--update-readme)."""
