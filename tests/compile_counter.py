"""Counts XLA compilations, to check that a second call compiles nothing (not a test module)."""

from __future__ import annotations

import contextlib

import jax.monitoring

_EVENT = "/jax/core/compile/backend_compile_duration"
_active: list[list[str]] = []


def _listener(name, duration, **kwargs):
  del duration, kwargs
  if name == _EVENT:
    for counter in _active:
      counter.append(name)


jax.monitoring.register_event_duration_secs_listener(_listener)


@contextlib.contextmanager
def count_compiles():
  """``with count_compiles() as compiled: ...``; ``len(compiled)`` programs were compiled."""
  counter: list[str] = []
  _active.append(counter)
  try:
    yield counter
  finally:
    _active.remove(counter)
