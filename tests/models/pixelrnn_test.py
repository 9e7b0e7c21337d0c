"""Tests of PixelRNN (genjax/models/pixelrnn.py): Row LSTM and Diagonal BiLSTM."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import genjax
from genjax.models import pixelrnn

_FAST_COMPILE = {"xla_backend_optimization_level": 0}
_jit = functools.partial(jax.jit, compiler_options=_FAST_COMPILE)


def _build(cell, shape=(4, 4, 1), likelihood="bernoulli", **kw):
  cfg = dict(name="pixelrnn", input_shape=shape, likelihood=likelihood, cell=cell,
             features=6, num_layers=1, first_kernel_size=3, kernel_size=3,
             output_features=8)
  cfg.update(kw)
  return pixelrnn.build(ml_collections.ConfigDict(cfg), jax.random.key(0))


def _call(fn, model, *args):
  """``fn(model, *args)`` under ``jax.jit`` of the split model."""
  graphdef, state = nnx.split(model)
  return _jit(lambda s, *a: fn(nnx.merge(graphdef, s), *a))(state, *args)


def _jacobian(model, shape):
  """d (random projection of the logits at each sub-pixel) / d input: [HWC, HWC]."""
  x = jnp.asarray(np.random.default_rng(1).uniform(-1, 1, (1, *shape)), jnp.float32)
  proj = jnp.asarray(np.random.default_rng(2).normal(size=256), jnp.float32)

  def f(m, v):
    logits = m(v.reshape(1, *shape))
    return (logits @ proj if logits.ndim == 5 else logits).reshape(-1)

  return np.asarray(_call(lambda m, v: jax.jacrev(lambda u: f(m, u))(v), model,
                          x.reshape(-1)))


def _order(shape):  # raster order of every sub-pixel (i, j, c)
  return list(itertools.product(*(range(s) for s in shape)))


def test_registered():
  assert genjax.models.get("pixelrnn") is pixelrnn
  assert pixelrnn.LIKELIHOOD == "exact"


@pytest.mark.parametrize("cell, shape, likelihood", [
    ("row_lstm", (4, 4, 1), "bernoulli"),
    ("row_lstm", (3, 3, 3), "categorical"),
    ("diagonal_bilstm", (4, 4, 1), "bernoulli"),
    ("diagonal_bilstm", (3, 3, 3), "categorical"),
])
def test_causality_by_gradient(cell, shape, likelihood):
  """The conditional of sub-pixel t depends on no sub-pixel >= t, and on some < t."""
  # wide enough that some unit of every colour group is active (relu) everywhere
  model = _build(cell, shape, likelihood, features=24, output_features=24, num_layers=2)
  jac = _jacobian(model, shape)
  order = _order(shape)
  for t, (i, j, c) in enumerate(order):
    for s, (i2, j2, c2) in enumerate(order):
      allowed = (i2, j2) < (i, j) or ((i2, j2) == (i, j) and c2 < c)
      if not allowed:
        assert jac[t, s] == 0.0, ((i, j, c), (i2, j2, c2))
    if t > 0:
      assert np.any(jac[t, :t] != 0), (i, j, c)


def test_diagonal_bilstm_sees_every_earlier_pixel_and_row_lstm_a_triangle():
  """Figure 2 of the paper: Row LSTM's context is a triangle above the pixel."""
  shape = (5, 5, 1)
  at = lambda i, j: i * 5 + j  # noqa: E731
  jac = _jacobian(_build("diagonal_bilstm", shape, num_layers=2), shape)
  assert np.all(jac[-1, :-1] != 0)  # the last pixel sees every earlier pixel
  assert jac[at(2, 1), at(1, 4)] != 0  # (2, 1) sees (1, 4), three columns right
  # and the far end of the row above, which the 3x3 mask-A layer only reads at (r + 1,
  # 3..4): the first layer's backward direction reads the image for these
  assert jac[at(1, 0), at(0, 4)] != 0 and jac[at(2, 0), at(1, 4)] != 0
  # Row LSTM with 1x3 kernels: d rows up it reaches at most d columns right
  jac = _jacobian(_build("row_lstm", shape, num_layers=2), shape)
  assert jac[at(2, 1), at(1, 3)] == 0  # one row up, two columns right: outside
  assert jac[at(2, 1), at(1, 4)] == 0
  assert jac[at(2, 1), at(1, 2)] != 0  # one row up, one column right: inside
  assert jac[at(2, 1), at(0, 3)] != 0  # two rows up, two columns right: inside
  assert np.all(jac[at(2, 1), :at(2, 1)][[at(0, 0), at(1, 0), at(2, 0)]] != 0)


@pytest.mark.parametrize("cell, shape, likelihood", [
    ("row_lstm", (3, 3, 3), "categorical"),
    ("diagonal_bilstm", (3, 4, 1), "bernoulli"),
])
def test_log_likelihood_is_the_sum_of_one_pixel_at_a_time_conditionals(cell, shape,
                                                                       likelihood):
  """Each conditional recomputed on an image holding only the earlier sub-pixels."""
  model = _build(cell, shape, likelihood)
  rng = np.random.default_rng(0)
  x = rng.integers(0, 2 if likelihood == "bernoulli" else 256, (2, *shape)).astype(np.uint8)
  batch = {"image": jnp.asarray(x), "label": jnp.zeros(2, jnp.int32)}
  order = _order(shape)
  partial = np.zeros((len(order), *x.shape), np.uint8)  # [T, B, H, W, C]
  for t in range(len(order)):
    for i, j, c in order[:t]:
      partial[t, :, i, j, c] = x[:, i, j, c]
  logits = _call(lambda m, p: pixelrnn.conditionals(m, p.reshape(-1, *shape)), model,
                 jnp.asarray(partial))
  logits = np.asarray(logits).reshape(len(order), 2, *logits.shape[1:])
  total = np.zeros(2)
  for t, (i, j, c) in enumerate(order):
    lt = logits[t, :, i, j, c]
    if likelihood == "bernoulli":
      total += x[:, i, j, c] * lt - np.logaddexp(0, lt)
    else:
      total += (lt - np.logaddexp.reduce(lt, axis=-1, keepdims=True))[
          np.arange(2), x[:, i, j, c]]
  ll = _call(lambda m, b: pixelrnn.log_likelihood(m, b, None), model, batch)
  np.testing.assert_allclose(ll, total, rtol=1e-5, atol=1e-4)
  loss, metrics = _call(lambda m, b: pixelrnn.loss(m, b, jax.random.key(0)), model, batch)
  np.testing.assert_allclose(metrics["nll_nats"], -total.mean(), rtol=1e-5)
  np.testing.assert_allclose(metrics["bits_per_dim"],
                             -total.mean() / (np.prod(shape) * np.log(2)), rtol=1e-5)
  assert loss == metrics["loss"]


@pytest.mark.parametrize("cell, shape, likelihood", [
    ("row_lstm", (3, 3, 1), "bernoulli"),
    ("diagonal_bilstm", (2, 3, 3), "categorical"),
])
def test_naive_sampling_under_jit_is_deterministic_per_key(cell, shape, likelihood):
  model = _build(cell, shape, likelihood, features=6)
  graphdef, state = nnx.split(model)
  run = _jit(lambda s, k: pixelrnn.sample(nnx.merge(graphdef, s), k, 3, temperature=0.9))
  a, b = run(state, jax.random.key(3)), run(state, jax.random.key(3))
  assert a.dtype == jnp.uint8 and a.shape == (3, *shape)
  np.testing.assert_array_equal(a, b)
  assert int(a.max()) <= (1 if likelihood == "bernoulli" else 255)
  assert len(np.unique(np.asarray(a))) > 1
  assert not np.array_equal(a, run(state, jax.random.key(4)))


def test_bad_configs_and_methods_are_clear_errors():
  base = dict(name="pixelrnn", input_shape=(4, 4, 1))
  for overrides, message in [
      ({"cell": "gru"}, "config.model.cell must be one of 'row_lstm', 'diagonal_bilstm'"),
      ({"widht": 3}, "unknown field"),
      ({"likelihood": "gaussian"}, "likelihood must be one of"),
      ({"kernel_size": 4}, "kernel_size must be odd"),
      ({"num_layers": 0}, "num_layers must be an int >= 1"),
      ({"input_shape": (4, 4, 3), "features": 2}, "at least the number of image channels"),
  ]:
    with pytest.raises(ValueError, match=message):
      pixelrnn.build(ml_collections.ConfigDict({**base, **overrides}), jax.random.key(0))
  model = _build("row_lstm")
  with pytest.raises(ValueError, match="method='naive' only, got method='cached'"):
    pixelrnn.sample(model, jax.random.key(0), 2, method="cached")
  with pytest.raises(ValueError, match="temperature must be > 0"):
    pixelrnn.sample(model, jax.random.key(0), 2, temperature=0.0)
  with pytest.raises(ValueError, match="PixelRNN is unconditional"):
    pixelrnn.conditionals(model, jnp.zeros((2, 4, 4, 1), jnp.uint8), jnp.zeros(2, jnp.int32))
