"""picture-worker's benchmarks: ``python -m bench`` (see bench/__main__.py and
docs/benchmarks.md). Not part of the pytest run; tests/bench/test_bench_smoke.py keeps them
working."""
