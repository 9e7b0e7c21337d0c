"""Tests of the Glow family (genjax/models/glow.py) on tiny models."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import genjax
from genjax import checkpoint as ckpt_lib
from genjax import train
from genjax.models import flow
from genjax.models import glow
from genjax.nn import flows

import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check

SHAPE = (8, 8, 1)
TINY = dict(name="glow", input_shape=SHAPE, num_levels=2, num_steps=2, hidden=8, num_blocks=0)


# XLA's backend optimisations halve the compile time of these tiny programs when off.
_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)


def _batch(n: int = 8, shape=SHAPE, seed: int = 0) -> dict:
  rng = np.random.default_rng(seed)
  image = rng.integers(0, 256, size=(n, *shape)).astype(np.uint8)
  return {"image": jnp.asarray(image), "label": jnp.zeros((n,), jnp.int32)}


def _perturb(model, seed: int = 0, scale: float = 0.05):
  """Random non-zero parameters (the zero-initialised last layers included)."""
  rng = np.random.default_rng(seed)
  params = nnx.state(model, nnx.Param)
  nnx.update(model, jax.tree.map(
      lambda p: p + scale * jnp.asarray(rng.normal(size=p.shape), p.dtype), params))
  return model


@functools.partial(_jit, static_argnums=0)
def _round_trip(graphdef, state, x):
  model = nnx.merge(graphdef, state)
  zs, logdet = glow.forward(model, x)
  return glow.inverse(model, zs), logdet


def _max_inverse_error(model, x) -> float:
  x_back, _ = _round_trip(*nnx.split(model), x)
  return float(jnp.abs(x_back - x).max())


def test_registered():
  assert genjax.models.get("glow") is glow


def test_build_rejects_bad_configs_with_clear_errors():
  with pytest.raises(ValueError, match="divisible by 4"):
    glow.build(dict(TINY, input_shape=(6, 6, 1)), jax.random.key(0))
  with pytest.raises(ValueError, match="divisible by 8"):
    glow.build(dict(TINY, input_shape=(28, 28, 1), num_levels=3), jax.random.key(0))
  with pytest.raises(ValueError, match="unknown field"):
    glow.build(dict(TINY, depth=3), jax.random.key(0))
  with pytest.raises(ValueError, match="permutation"):
    glow.build(dict(TINY, permutation="random"), jax.random.key(0))
  config = ml_collections.ConfigDict({"data": {"view": "binarized"}, "model": TINY})
  with pytest.raises(ValueError, match="8bit"):
    glow.check_config(config)


def test_wrong_input_shape_is_a_clear_error():
  model = glow.build(TINY, jax.random.key(0))
  with pytest.raises(ValueError, match=r"\(H, W, C\) = \(8, 8, 1\)"):
    glow.loss(model, _batch(shape=(8, 8, 3)), jax.random.key(0))
  with pytest.raises(ValueError, match="built for inputs"):
    glow.forward(model, jnp.zeros((2, 16, 16, 1)))
  with pytest.raises(ValueError, match="built for inputs"):
    glow.forward(model, jnp.zeros((2, 8, 8, 3)))
  with pytest.raises(TypeError, match="dequantise"):
    glow.forward(model, jnp.zeros((2, *SHAPE), jnp.uint8))


def test_bits_per_dim_by_hand_on_an_identity_like_flow():
  # Fresh Glow with x - 0.5 preprocessing: ActNorm uninitialised (identity),
  # couplings and split priors zero (identity), 1x1 convolutions rotations
  # (|det| = 1, norms kept), squeezes permutations: log p(x) = sum log N(x - 0.5).
  model = glow.build(TINY, jax.random.key(0))
  batch, key = _batch(), jax.random.key(7)
  graphdef, state = nnx.split(model)

  @_jit
  def loss_and_ll(state):
    model = nnx.merge(graphdef, state)
    return glow.loss(model, batch, key), glow.log_likelihood(model, batch, key)

  (loss, metrics), ll_model = loss_and_ll(state)
  x = np.asarray(genjax.data.dequantize(batch["image"], key), np.float64)  # (k + u) / 256
  dims = math.prod(SHAPE)
  log_density = (-0.5 * np.log(2 * np.pi) - 0.5 * (x - 0.5) ** 2).reshape(8, -1).sum(-1)
  ll = log_density - dims * np.log(256.0)  # density of k + u on the 0..256 scale
  nll = -ll.mean()
  np.testing.assert_allclose(loss, nll, rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"], nll / (dims * np.log(2.0)), rtol=1e-5)
  np.testing.assert_allclose(ll_model, ll, rtol=1e-5)
  np.testing.assert_allclose(metrics["nll_nats"], -np.mean(ll_model), rtol=1e-6)


def test_initialize_normalises_every_actnorm_in_order():
  model = glow.build(TINY, jax.random.key(0))
  batch, key = _batch(16), jax.random.key(3)
  glow.initialize(model, batch, key)
  graphdef, state = nnx.split(model)

  @_jit
  def actnorm_outputs(state):  # each step's ActNorm output on that step's input
    model = nnx.merge(graphdef, state)
    x, _ = flows.preprocess(flow.dequantize(batch["image"], key), "center")
    outputs = []
    for level, stack in enumerate(model.stacks):
      x = flows.squeeze(x)
      for k in range(stack.num_steps):
        step = stack.step(k)
        outputs.append(step.layers[0].forward(x)[0])
        x, _ = step.forward(x)
      if level < len(model.priors):
        x = model.priors[level].forward(x)[0]
    return outputs

  for y in actnorm_outputs(state):
    np.testing.assert_allclose(y.mean((0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std((0, 1, 2)), 1.0, atol=1e-3)
  for stack in model.stacks:
    assert np.all(np.asarray(stack.steps.layers[0].initialized[...]))


def test_actnorm_survives_checkpoint_and_is_not_reinitialised(tmp_path):
  model = glow.build(TINY, jax.random.key(0))
  glow.initialize(model, _batch(seed=1), jax.random.key(1))
  saved = jax.tree.map(np.asarray, nnx.state(model))
  ckpt = ckpt_lib.Checkpointer(tmp_path / "ckpt")
  ckpt.save(0, nnx.state(model))
  abstract = nnx.eval_shape(lambda: glow.build(TINY, jax.random.key(0)))
  graphdef, abstract_state = nnx.split(abstract)
  state, _, _ = ckpt.restore(ckpt_lib.abstract_like(abstract_state))
  ckpt.close()
  restored = nnx.merge(graphdef, state)
  flags = [np.asarray(s.steps.layers[0].initialized[...]) for s in restored.stacks]
  assert all(f.all() for f in flags)
  jax.tree.map(np.testing.assert_array_equal, saved, jax.tree.map(np.asarray, state))
  glow.initialize(restored, _batch(seed=2), jax.random.key(2))  # a different batch: no-op
  jax.tree.map(np.testing.assert_array_equal, saved,
               jax.tree.map(np.asarray, nnx.state(restored)))


def test_whole_model_logdet_matches_brute_force_jacobian():
  model = glow.build(TINY, jax.random.key(0))  # 8 -> 4 -> 2, D = 64
  glow.initialize(model, _batch(), jax.random.key(1))
  _perturb(model, scale=0.1)
  graphdef, state = nnx.split(model)
  x = flow.dequantize(_batch(1, seed=5)["image"], jax.random.key(2))

  def flat(v):
    zs, _ = glow.forward(nnx.merge(graphdef, state), v.reshape(1, *SHAPE))
    return jnp.concatenate([z.reshape(-1) for z in zs])

  jac = _jit(jax.jacrev(flat))(x.reshape(-1))
  _, logdet = _round_trip(graphdef, state, x)
  assert abs(float(logdet[0])) > 1.0  # not trivially zero
  np.testing.assert_allclose(logdet[0], jnp.linalg.slogdet(jac)[1], atol=1e-3, rtol=1e-5)
  assert _max_inverse_error(model, x) < 1e-4


def test_train_steps_then_inverse_is_exact():
  opt = ml_collections.ConfigDict(dict(name="adam", learning_rate=3e-3, schedule="constant"))
  ts = train.create_train_state(glow, TINY, opt, 10, jax.random.key(0))
  batch = _batch()
  glow.initialize(ts.model, batch, jax.random.key(1))
  _perturb(ts.model)
  x = flow.dequantize(batch["image"], jax.random.key(2))
  assert _max_inverse_error(ts.model, x) < 1e-4
  graphdef, state = nnx.split(ts)
  step = train.compile_train_step(glow, graphdef).trace(
      state, batch, jax.random.key(3)).lower().compile(_FAST_COMPILE)
  losses = []
  for _ in range(3):
    state, metrics = step(state, batch, jax.random.key(3))
    losses.append(float(metrics["loss"]))
    assert metrics["finite"] == 1.0 and np.isfinite(metrics["bits_per_dim"])
  assert losses[-1] < losses[0], losses
  trained = nnx.merge(graphdef, state)
  assert int(trained.step[...]) == 3
  assert _max_inverse_error(trained.model, x) < 1e-4


def test_sample_and_temperature_grid():
  model = _perturb(glow.build(TINY, jax.random.key(0)))
  graphdef, state = nnx.split(model)
  images = _jit(lambda s, k: glow.sample(nnx.merge(graphdef, s), k, 3, temperature=0.7))(
      state, jax.random.key(1))
  assert images.shape == (3, *SHAPE) and images.dtype == jnp.uint8
  grid = glow.visualizations(model, jax.random.key(2), _batch())["temperatures"]
  assert grid.shape == (25, *SHAPE) and grid.dtype == jnp.uint8
  assert np.all(np.asarray(grid[:5]) == np.asarray(grid[0]))  # T = 0: one image per row
  assert not np.all(np.asarray(grid[20:]) == np.asarray(grid[20]))  # T = 1 varies


def test_traced_program_does_not_grow_with_depth():
  def num_equations(num_steps):
    model = nnx.eval_shape(lambda: glow.build(dict(TINY, num_steps=num_steps),
                                              jax.random.key(0)))
    graphdef, state = nnx.split(model)
    x = jax.ShapeDtypeStruct((2, *SHAPE), jnp.float32)
    jaxpr = jax.make_jaxpr(lambda s, v: glow.forward(nnx.merge(graphdef, s), v))(state, x)
    return len(jaxpr.eqns)

  assert num_equations(2) == num_equations(7)


def test_bfloat16_computes_the_networks_in_bfloat16_and_the_flow_in_float32():
  """``dtype="bfloat16"``: the convolutions (couplings, split priors) are bfloat16, the
  invertible 1x1 convolutions' products (and log|det|) float32; parameters, loss and
  log-likelihood float32, close to float32's."""
  mixed_precision.check_bfloat16(
      glow, lambda dtype: _perturb(glow.build(dict(TINY, dtype=dtype), jax.random.key(0))),
      _batch(4), float32_ok=lambda op: op[0] == "dot_general")
