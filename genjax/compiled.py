"""Public model functions that compile once: ``jax.jit`` at the boundary.

A family's public function ``fn(model, *args, **kwargs)`` takes an NNX module.
`model_function` wraps it so that a call splits the model into ``(graphdef,
state)`` and runs one ``jax.jit`` of ``fn`` with the graphdef static: the second
call with the same shapes and static arguments compiles nothing. Inside another
transformation (a train step's ``jit`` or ``grad``) the wrapper calls ``fn``
directly, so gradients flow and nothing is nested needlessly.

Functions that change the model in place (ActNorm's data-dependent ``initialize``,
a GAN's ``update``) must not be wrapped: the compiled function returns values,
not the model's new state.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable, Sequence

import jax
from flax import nnx


def _is_traced(tree) -> bool:
  return any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves(tree))


def model_function(fn: Callable | None = None, *, static_argnames: Sequence[str] = (),
                   check: Callable[..., None] | None = None):
  """Decorator: ``fn(model, ...)`` compiled once per model graph, shapes and statics.

  Args:
    fn: the function; its first parameter is the model (an NNX module that it
      does not mutate).
    static_argnames: parameters that are Python values (sizes, method names);
      they may be passed positionally or by name.
    check: called before compiling with every argument of the call by name
      (defaults filled in, e.g. ``check(model=..., key=..., num=..., method=...)``),
      for checks of Python values that ``fn`` sees traced (a float temperature);
      it raises on a bad value. Not called inside another transformation.

  Returns:
    The wrapped function, with the original as ``.eager``.
  """
  if fn is None:
    return functools.partial(model_function, static_argnames=static_argnames, check=check)
  sig = inspect.signature(fn)
  params = list(sig.parameters.values())

  def impl(graphdef, state, *args, **kwargs):
    return fn(nnx.merge(graphdef, state), *args, **kwargs)

  impl.__name__, impl.__qualname__ = fn.__name__, fn.__qualname__  # jit(<name>) in HLO
  impl.__signature__ = sig.replace(parameters=[
      inspect.Parameter("graphdef", inspect.Parameter.POSITIONAL_ONLY),
      inspect.Parameter("state", inspect.Parameter.POSITIONAL_ONLY), *params[1:]])
  # jit infers nothing when given both argnums and argnames: list the positions too
  positional = [p.name for p in params[1:] if p.kind in (
      inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
  argnums = (0, *(2 + positional.index(n) for n in static_argnames if n in positional))
  jitted = jax.jit(impl, static_argnums=argnums, static_argnames=tuple(static_argnames))

  @functools.wraps(fn)
  def wrapper(model, *args, **kwargs):
    graphdef, state = nnx.split(model)
    if _is_traced(state) or _is_traced((args, kwargs)):
      return fn(model, *args, **kwargs)
    if check is not None:
      bound = sig.bind(model, *args, **kwargs)
      bound.apply_defaults()
      check(**bound.arguments)
    return jitted(graphdef, state, *args, **kwargs)

  wrapper.eager = fn
  return wrapper


_INITIALIZERS: dict = {}


def build(constructor: Callable[..., nnx.Module], key: jax.Array, **kwargs) -> nnx.Module:
  """``constructor(**kwargs, rngs=nnx.Rngs(params=key))`` initialised by one compiled
  program, cached per constructor and keyword arguments (JSON-serialisable).

  Built op by op, a model whose layers are stacked with ``nnx.vmap`` compiles every
  random draw and small op on its own (seconds to a minute on a CPU); one jitted
  initialisation compiles once per architecture.
  """
  import json  # pylint: disable=g-import-not-at-top
  cache_key = (constructor, json.dumps(kwargs, sort_keys=True, default=str))
  if cache_key not in _INITIALIZERS:
    make = lambda k: constructor(**kwargs, rngs=nnx.Rngs(params=k))
    graphdef = nnx.graphdef(nnx.eval_shape(lambda: make(jax.random.key(0))))
    _INITIALIZERS[cache_key] = (graphdef, jax.jit(lambda k: nnx.state(make(k))))
  graphdef, init_state = _INITIALIZERS[cache_key]
  return nnx.merge(graphdef, init_state(key))
