"""Benchmarks of the toolkit: overhead, out-of-core input, cost growth, accuracy, latency.

``scripts/benchmark_toolkit.py`` is the command; :mod:`benchmarks.runner` plans
the runs and writes the reports; :mod:`benchmarks.worker` is the subprocess
that imports TensorFlow and measures one thing. Results live in
``benchmarks/results/*.json`` and ``docs/performance.md``.
"""
