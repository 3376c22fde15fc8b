"""Benchmarks: timings side by side in one process, reported as ratios to a baseline.

``distlstm bench`` runs them and writes ``BENCHMARKS.md``; see :mod:`distlstm.bench.report`.
"""
