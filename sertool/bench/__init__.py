"""Benchmark stage: the runner (features x models x folds -> per-unit results) and the leaderboard.

Nothing heavy is imported here; import :mod:`sertool.bench.leaderboard` or :mod:`sertool.bench.runner`
directly. A benchmark definition (:class:`Benchmark`) and :func:`run_benchmark` are exported here.
"""

from sertool.bench.definition import Benchmark, SplitSpec, run_benchmark

__all__ = ["Benchmark", "SplitSpec", "run_benchmark"]
