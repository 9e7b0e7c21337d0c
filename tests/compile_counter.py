"""Counts JAX compilations, to check that a second call compiles nothing (not a test module).

A program that JAX compiles is first lowered (jaxpr to MLIR), then compiled by
the backend, or read from the persistent compilation cache that the tests share
(tests/conftest.py), in which case no backend compilation is recorded. Counting
lowerings as well catches a retraced function whatever the cache holds.
"""

from __future__ import annotations

import contextlib

import jax.monitoring

_EVENTS = ("/jax/core/compile/backend_compile_duration",
           "/jax/core/compile/jaxpr_to_mlir_module_duration")
_active: list[list[str]] = []


def _listener(name, duration, **kwargs):
  del duration
  if name in _EVENTS:
    for counter in _active:
      counter.append(f"{name.rsplit('/', 1)[-1]}: {kwargs.get('fun_name', '?')}")


jax.monitoring.register_event_duration_secs_listener(_listener)


@contextlib.contextmanager
def count_compiles():
  """``with count_compiles() as compiled: ...``; ``compiled`` lists each lowering and
  backend compilation (``"<event>: <function>"``), empty when nothing was compiled."""
  counter: list[str] = []
  _active.append(counter)
  try:
    yield counter
  finally:
    _active.remove(counter)
