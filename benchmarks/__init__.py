"""Benchmarks of bidi-core beside a raw client and the reference (Strands Agents).

Run ``python -m benchmarks`` (or ``nox -s bench``); ``benchmarks/README.md``
says what each figure means. This package is never imported by the library,
and every module the clients share (:mod:`benchmarks.workload`,
:mod:`benchmarks.loadserver`) uses only the standard library, because the
reference client runs in a virtualenv of its own without bidi-core.
"""
