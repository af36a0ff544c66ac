"""Benchmarks that print figures; see RESULTS.md for the latest ones and their commands."""
