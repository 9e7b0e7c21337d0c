"""Benchmark scripts: each prints its numbers and writes them to a file.

Every script defines its absl flags in ``_define_flags()``, called only when it
runs as a program (``python -m experiments.benchmarks.<name>``). absl's flag
registry is global, so flags defined at import would collide when two scripts
that share a flag name (``--workdir``, ``--batch_size``) are imported into one
process, as the tests do; tests/benchmarks_test.py imports them all together.
"""
