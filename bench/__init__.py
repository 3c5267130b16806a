"""Benchmarks: ``tally bench`` runs them; docs/benchmarks.md keeps the figures."""
