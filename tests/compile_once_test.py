"""Every public function of every registered family compiles once: a second call
with the same shapes and static arguments lowers and compiles nothing.

Parametrised over ``genjax.models.names()``, so a new family is checked as soon as
it is registered. Each family runs on its smoke config's model.
"""

import importlib
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from genjax import models
from genjax import rundir
from genjax import train
from genjax.data import pipeline
from genjax.data import run_data
from genjax.models import flow
from compile_counter import count_compiles  # tests/compile_counter.py

_FUNCTIONS = ("loss", "log_likelihood", "eval_metrics", "sample", "forward", "inverse",
              "conditionals", "visualizations")
_B = 2
# single operations on arguments (a Python float to an array, a slice), compiled once
_CONVERSIONS = ("convert_element_type", "broadcast_in_dim", "dynamic_slice")


def _smoke(name):
  config = importlib.import_module(f"experiments.configs.{name}").get_config("smoke")
  kind = run_data.kind(config.data.name)
  if kind == "image":
    config.model.input_shape = pipeline.info(config.data.name)["input_shape"]
  elif kind == "captions":  # the tokenizer's fields from the (untrained) image_tokenizer block
    config = rundir.prepare_config(config)
  else:
    config.model.vocab_size = 12
  return config


def _batch(config):
  rng = np.random.default_rng(0)
  if run_data.kind(config.data.name) == "captions":
    return {k: jnp.asarray(v) for k, v in
            run_data.for_config(config).synthetic_batch(_B).items()}
  if run_data.kind(config.data.name) == "text":
    return {"tokens": jnp.asarray(rng.integers(0, config.model.vocab_size,
                                               (_B, config.model.block_size + 1)), jnp.int32)}
  high = 2 if config.data.view == "binarized" else 256
  return {"image": jnp.asarray(rng.integers(0, high, (_B, *config.model.input_shape)),
                               jnp.uint8),
          "label": jnp.asarray(rng.integers(0, 10, (_B,)), jnp.int32)}


def _calls(family, model, batch):
  """``name -> thunk`` for each public function the family has."""
  key = jax.random.key(1)
  calls = {}
  for name in _FUNCTIONS:
    fn = getattr(family, name, None)
    if fn is None or (name == "log_likelihood" and family.LIKELIHOOD is None):
      continue
    if name in ("loss", "log_likelihood", "eval_metrics"):
      calls[name] = lambda fn=fn: fn(model, batch, key)
    elif name == "visualizations":
      calls[name] = lambda fn=fn: fn(model, key, batch)
    elif name == "sample":
      extra = ({"max_new_tokens": 3} if "max_new_tokens" in inspect.signature(fn).parameters
               else {})
      calls[name] = lambda fn=fn: fn(model, key, _B, **extra)
    elif name == "forward":
      x = flow.dequantize(batch["image"], key)
      calls[name] = lambda fn=fn: fn(model, x)
    elif name == "inverse":
      zs = family.forward(model, flow.dequantize(batch["image"], key))[0]
      calls[name] = lambda fn=fn: fn(model, zs)
    else:  # conditionals
      x = batch["tokens"][:, :-1] if "tokens" in batch else batch["image"]
      calls[name] = lambda fn=fn, x=x: fn(model, x)
  return calls


@pytest.mark.parametrize("name", models.names())
def test_public_functions_compile_once(name):
  family = models.get(name)
  config = _smoke(name)
  model = family.build(config.model, jax.random.key(0))
  calls = _calls(family, model, _batch(config))
  assert {"loss", "sample"} <= set(calls), sorted(calls)
  for fn_name, call in calls.items():
    with count_compiles() as first:
      jax.block_until_ready(call())
    lowered = [e for e in first if e.startswith("jaxpr_to_mlir")]
    programs = [e for e in lowered if not any(f"jit({p})" in e for p in _CONVERSIONS)]
    # one or two programs (DALL-E samples tokens, then decodes them) and a few
    # argument conversions, not one program per operation
    assert (1 <= len(programs) <= 2 and len(lowered) <= 8) or fn_name == "forward", (
        fn_name, lowered)
    with count_compiles() as compiled:
      jax.block_until_ready(call())
    assert not compiled, f"{name}.{fn_name} compiled again: {compiled}"


def test_is_finite_tree_compiles_once():
  tree = {"a": jnp.ones(3), "b": [jnp.zeros((2, 2)), jnp.arange(3)]}
  bad = {"a": tree["a"] * jnp.nan, "b": tree["b"]}
  assert train.is_finite_tree(tree)
  with count_compiles() as compiled:
    assert train.is_finite_tree(tree)
    assert not train.is_finite_tree(bad)
  assert not compiled, compiled


def test_functions_that_change_the_model_stay_uncompiled():
  """ActNorm's data-dependent init and a GAN's update change the model in place."""
  for name, fn_name in (("glow", "initialize"), ("realnvp", "initialize"),
                        ("dcgan", "update")):
    assert not hasattr(getattr(models.get(name), fn_name), "eager"), (name, fn_name)
  # and every wrapped function keeps the family's own signature
  for name in models.names():
    family = models.get(name)
    for fn_name in _FUNCTIONS:
      fn = getattr(family, fn_name, None)
      if fn is not None and hasattr(fn, "eager"):
        assert inspect.signature(fn) == inspect.signature(fn.eager)
