"""Tests of PixelRNN (genjax/models/pixelrnn.py): Row LSTM and Diagonal BiLSTM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

import genjax
from genjax.models import pixelrnn
from genjax.nn import masked

import pixel_testing  # tests/models/pixel_testing.py, shared with pixelcnn_test
from pixel_testing import jacobian as _jacobian
import mixed_precision  # tests/models/mixed_precision.py, the bfloat16 check


def _build(cell, shape=(4, 4, 1), likelihood="bernoulli", **kw):
  cfg = dict(name="pixelrnn", input_shape=shape, likelihood=likelihood, cell=cell,
             features=6, num_layers=1, first_kernel_size=3, kernel_size=3,
             output_features=8)
  cfg.update(kw)
  return pixelrnn.build(ml_collections.ConfigDict(cfg), jax.random.key(0))


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
  pixel_testing.assert_causal(_jacobian(model, shape), shape)


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
  x = np.random.default_rng(0).integers(0, 2 if likelihood == "bernoulli" else 256,
                                        (2, *shape))
  pixel_testing.check_log_likelihood_one_pixel_at_a_time(
      pixelrnn, _build(cell, shape, likelihood), {"image": jnp.asarray(x, jnp.uint8)},
      likelihood)


@pytest.mark.parametrize("cell, shape, likelihood", [
    ("row_lstm", (3, 3, 1), "bernoulli"),
    ("diagonal_bilstm", (2, 3, 3), "categorical"),
])
def test_naive_sampling_under_jit_is_deterministic_per_key(cell, shape, likelihood):
  model = _build(cell, shape, likelihood, features=6)
  graphdef, state = nnx.split(model)
  run = pixel_testing.jit(
      lambda s, k: pixelrnn.sample(nnx.merge(graphdef, s), k, 3, temperature=0.9))
  a, b = run(state, jax.random.key(3)), run(state, jax.random.key(3))
  assert a.dtype == jnp.uint8 and a.shape == (3, *shape)
  np.testing.assert_array_equal(a, b)
  assert int(a.max()) <= (1 if likelihood == "bernoulli" else 255)
  assert len(np.unique(np.asarray(a))) > 1
  assert not np.array_equal(a, run(state, jax.random.key(4)))


@pytest.mark.parametrize("cell, shape, likelihood, num_layers", [
    # each cell once, one grey and one colour, one of them two layers deep
    ("row_lstm", (3, 3, 3), "categorical", 1),
    ("diagonal_bilstm", (4, 5, 1), "bernoulli", 2),
])
def test_cached_sampling_equals_naive_sampling(cell, shape, likelihood, num_layers):
  pixel_testing.check_cached_sampling_equals_naive(
      pixelrnn.sample, _build(cell, shape, likelihood, features=6, num_layers=num_layers), 3,
      1 if likelihood == "bernoulli" else 255)


@pytest.mark.parametrize("cell", ["row_lstm", "diagonal_bilstm"])
def test_cached_network_gives_the_full_networks_logits(cell):
  """Position by position through the caches, on a fixed image: the same logits."""
  shape = (4, 5, 3)
  model = masked.premask(_build(cell, shape, "categorical", features=6, num_layers=2))
  x = jnp.asarray(np.random.default_rng(1).integers(0, 256, (2, *shape)), jnp.uint8)
  want = pixelrnn.conditionals(model, x)
  net = pixelrnn.cached_net(model, 2)
  cache, rows = net.init(), []
  for i in range(shape[0]):
    row = []
    for j in range(shape[1]):
      logits, cache = net.pixel(cache, i, j, x[:, i, j])  # the later channels are masked
      cache = net.commit(cache, i, j, x[:, i, j])
      row.append(logits)
    cache = net.end_row(cache, i, x[:, i])
    rows.append(jnp.stack(row, 1))
  np.testing.assert_allclose(jnp.stack(rows, 1), want, atol=1e-5, rtol=1e-5)


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
  with pytest.raises(ValueError, match="method must be"):
    pixelrnn.sample(model, jax.random.key(0), 2, method="fast")
  with pytest.raises(ValueError, match="temperature must be > 0"):
    pixelrnn.sample(model, jax.random.key(0), 2, temperature=0.0)
  with pytest.raises(ValueError, match="PixelRNN is unconditional"):
    pixelrnn.conditionals(model, jnp.zeros((2, 4, 4, 1), jnp.uint8), jnp.zeros(2, jnp.int32))


def test_bfloat16_computes_in_bfloat16_with_float32_parameters_and_likelihood():
  """``dtype="bfloat16"``: the LSTMs' gates (both convolutions) and the masked layers
  are bfloat16; parameters, loss and log-likelihood float32, close to float32's."""
  x = np.random.default_rng(0).integers(0, 2, (2, 3, 4, 1))
  mixed_precision.check_bfloat16(
      pixelrnn, lambda dtype: _build("diagonal_bilstm", (3, 4, 1), dtype=dtype),
      {"image": jnp.asarray(x, jnp.uint8)})
