"""Benchmark stage: the runner (features x models x folds -> per-unit results) and the leaderboard.

Nothing heavy is imported here; import :mod:`sertool.bench.leaderboard` or :mod:`sertool.bench.runner`
directly.
"""
